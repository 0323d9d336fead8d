"""The package uses only public names of transformers and torch (plus the modeling hooks model files use)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "midi_event_transformer"
LIBRARIES = ("torch", "transformers")

# Documented hooks that transformers' own model files define or read (class attributes, config fields).
MODELING_HOOKS = {
    "_attn_implementation", "_init_weights", "_no_split_modules", "_supports_sdpa", "_supports_attention_backend",
    "_tied_weights_keys", "_can_set_attn_implementation", "_keys_to_ignore_on_load_unexpected",
}


def package_trees() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), filename=str(path))) for path in sorted(PACKAGE.rglob("*.py"))]


def own_private_names(trees: list[tuple[Path, ast.Module]]) -> set[str]:
    """Underscore names the package defines itself (functions, classes, attributes it assigns, arguments)."""
    names = set()
    for _, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {name for name in names if name.startswith("_")}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_imports_from_torch_or_transformers():
    problems = []
    for path, tree in package_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
                parts = node.module.split(".") + [alias.name for alias in node.names]
                problems += [f"{path.name}:{node.lineno} from {node.module} import ..." for part in parts
                             if is_private(part)]
            elif isinstance(node, ast.Import):
                problems += [f"{path.name}:{node.lineno} import {alias.name}" for alias in node.names
                             if alias.name.split(".")[0] in LIBRARIES and any(map(is_private, alias.name.split(".")))]
    assert not problems, problems


def test_no_private_attributes_of_other_libraries():
    """Every ``x._name`` the package reads is its own, or a documented modeling hook; no ``getattr(obj, "_name")``."""
    trees = package_trees()
    own = own_private_names(trees) | MODELING_HOOKS
    problems = []
    for path, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and is_private(node.attr) and node.attr not in own:
                problems.append(f"{path.name}:{node.lineno} .{node.attr}")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                  and isinstance(node.args[1].value, str) and is_private(node.args[1].value)
                  and node.args[1].value not in own):
                problems.append(f"{path.name}:{node.lineno} getattr(..., {node.args[1].value!r})")
    assert not problems, problems


def test_no_torch_ops_namespace():
    """``torch.ops.*`` are operator registrations, not the documented Python API."""
    problems = [f"{path.name}:{node.lineno}" for path, tree in package_trees() for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and node.attr == "ops" and isinstance(node.value, ast.Name)
                and node.value.id == "torch"]
    assert not problems, problems
