"""The package's layout: what ``trust_remote_code`` copies sits flat at the root, and nothing else does; every other
module lives in a subpackage, and imports point one way (core <- generation <- evaluation <- hub / training <- apps).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from transformers.dynamic_module_utils import get_relative_import_files

import midi_event_transformer

PACKAGE_DIR = Path(midi_event_transformer.__file__).resolve().parent
REMOTE_CODE_ENTRY_FILES = ("configuration_midi_event_transformer.py", "modeling_midi_event_transformer.py",
                           "tokenization_midi_event_transformer.py")
#: Subpackages in dependency order: a module may import the core and the subpackages before its own.
LAYERS = ("generation", "evaluation", "hub", "training", "apps")
#: Imports that point the other way (see the README's "Architecture"): loading a reference checkpoint converts it,
#: ``save_pretrained`` writes a card. A core file's go through an absolute import guarded by ``try``.
UPWARD_IMPORTS = {
    ("modeling_midi_event_transformer.py", "midi_event_transformer.hub.conversion"),
    ("modeling_midi_event_transformer.py", "midi_event_transformer.hub.cards"),
    ("hub/conversion.py", "midi_event_transformer.hub.cards"),
    ("generation/loading.py", "midi_event_transformer.hub.conversion"),
}


def remote_code_closure() -> set[str]:
    """File names of the configuration, modeling and tokenization files and everything they import relatively."""
    closure = set(REMOTE_CODE_ENTRY_FILES)
    for name in REMOTE_CODE_ENTRY_FILES:
        closure |= {Path(path).name for path in get_relative_import_files(str(PACKAGE_DIR / name))}
    return closure


def test_package_root_holds_the_remote_code_closure_only():
    root_modules = {path.name for path in PACKAGE_DIR.glob("*.py")} - {"__init__.py"}
    assert root_modules == remote_code_closure()
    others = {path.name for path in PACKAGE_DIR.iterdir() if not path.name.endswith(".py")} - {"__pycache__"}
    assert others == {*LAYERS, "default_model", "hub_cards", "py.typed"}


def imported_modules(path: Path) -> list[tuple[str, bool]]:
    """``(absolute module name, inside a try block)`` for each import of the package in a module file."""
    relative = path.relative_to(PACKAGE_DIR)
    package = ["midi_event_transformer", *relative.parent.parts]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded = {id(node) for block in ast.walk(tree) if isinstance(block, ast.Try)
               for statement in block.body for node in ast.walk(statement)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                names = [".".join([*base, node.module])] if node.module else [".".join([*base, a.name])
                                                                                 for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(name, id(node) in guarded) for name in names if name.startswith("midi_event_transformer")]
    return found


def layer_of(module: str) -> int:
    """0 for the core (and the package itself), then 1 + the index of the subpackage in ``LAYERS``."""
    parts = module.split(".")
    return 1 + LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else 0


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_imports_point_one_way(path):
    relative = path.relative_to(PACKAGE_DIR).as_posix()
    if relative == "__init__.py":
        return  # the package's lazy exports name every layer
    own = layer_of("midi_event_transformer." + relative.removesuffix(".py").replace("/", "."))
    for module, guarded in imported_modules(path):
        if layer_of(module) > own:  # upwards: declared (and in a core file, guarded)
            assert (relative, module) in UPWARD_IMPORTS, f"{relative} imports {module} (upwards)"
            assert guarded or own > 0, f"core file {relative} imports {module} outside a try block"


def test_every_top_level_name_resolves():
    """``from midi_event_transformer import X`` works for every name the package lists (lazily imported)."""
    for name in midi_event_transformer.__all__:
        assert getattr(midi_event_transformer, name) is not None, name
    assert {"generate_midi", "load_adapter", "launch_app", "MidiGenerationPipeline"} <= set(midi_event_transformer.__all__)
