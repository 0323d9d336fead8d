"""Streamers for ``model.generate(streamer=...)``: finished events as they are generated.

``generate`` calls ``streamer.put(prompt_ids)`` once with the prompt (batch, length), then ``put(tokens)`` with
each new token (batch,), then ``end()``. These streamers gather the flat tokens into rows of 8 and hand on
each row as soon as it is complete:

* [`MidiEventIteratorStreamer`] puts them in a thread-safe queue and is iterated from another thread (like
  transformers' ``TextIteratorStreamer``): ``(8,)`` int64 rows, or decoded dicts with ``decode=True``;
* [`MidiFileStreamer`] rewrites a MIDI file with the events so far (decoded with the tokenizer's
  ``decode_midi``), so the piece can be opened while it grows;
* [`EventProgressStreamer`] counts the events of the whole batch on a tqdm bar, and [`StreamerGroup`] hands
  each call on to several streamers.

BOS and EOS rows are framing, not events: they are never handed on (EOS ends the stream). Only batch size 1
is supported, as for transformers' text streamers.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from queue import Queue
from typing import Any

import numpy as np
from transformers.generation.streamers import BaseStreamer

from ..midi_writing import row_to_named_event
from ..vocabulary import BOS_ID, EOS_ID, PAD_ID, TOKENS_PER_EVENT


def decode_row(row: Any) -> dict[str, Any]:
    """A row of 8 ids as ``{"type": "note", "time1": 0, "time2": 4, "track": 1, ...}`` (parameter values; see
    ``midi_writing.row_to_named_event``).

    A row that is not a valid event (unknown type id or a parameter id outside its range) gives
    ``{"type": None, "ids": [...]}``.
    """
    ids = [int(v) for v in row]
    event = row_to_named_event(ids)
    if event is None:
        return {"type": None, "ids": ids}
    name, values = event
    return {"type": name, **values}


def _as_int_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.int64)


class MidiEventStreamer(BaseStreamer):
    r"""Gathers ``generate``'s tokens into rows of 8 and calls :meth:`on_event` for each finished event row.

    Args:
        skip_prompt (`bool`, defaults to `False`): do not hand on the prompt's events (the rows completed by
            ``put``'s first call). A prompt ending inside an event completes with generated tokens: that event
            counts as generated.

    Subclasses implement ``on_event(row, from_prompt)`` and may implement ``on_end()``. After EOS (or ``end``)
    further tokens are ignored; an event left unfinished by ``end`` (generation stopped mid-event) is kept in
    ``pending`` and not handed on.
    """

    def __init__(self, skip_prompt: bool = False) -> None:
        if not isinstance(skip_prompt, bool):
            raise TypeError(f"skip_prompt must be a bool, not {type(skip_prompt).__name__}")
        self.skip_prompt = skip_prompt
        self.prompt_seen = False
        self.finished = False
        self.pending: list[int] = []  # ids of the current, unfinished row
        self.rows: list[np.ndarray] = []  # every finished row so far (prompt included), framing rows too

    def put(self, value: Any) -> None:
        """Receive the prompt (first call, (1, L) or (L,)) or the next token ((1,) or a scalar)."""
        ids = _as_int_array(value)
        if not self.prompt_seen:
            if ids.ndim == 2:
                if ids.shape[0] != 1:
                    raise ValueError(f"{type(self).__name__} only supports batch size 1, got a batch of "
                                     f"{ids.shape[0]} prompts")
                ids = ids[0]
            elif ids.ndim > 2:
                raise ValueError(f"the prompt must be (1, length) ids, got shape {ids.shape}")
            self.prompt_seen = True
            self._feed(ids.reshape(-1), from_prompt=True)
            return
        if ids.size != 1:
            raise ValueError(f"{type(self).__name__} only supports batch size 1, got {ids.size} tokens at once "
                             f"(shape {ids.shape})")
        self._feed(ids.reshape(-1), from_prompt=False)

    def _feed(self, ids: np.ndarray | list[int], from_prompt: bool) -> None:
        for token in ids.tolist() if isinstance(ids, np.ndarray) else ids:
            if self.finished:
                return
            self.pending.append(token)
            if len(self.pending) == 1 and token == EOS_ID:
                self.finished = True  # EOS ends the piece: its row is framing, the stream ends
                return
            if len(self.pending) == TOKENS_PER_EVENT:
                row = np.asarray(self.pending, dtype=np.int64)
                self.pending = []
                self.rows.append(row)
                is_framing = row[0] == BOS_ID or (row == PAD_ID).all()
                if not is_framing and not (from_prompt and self.skip_prompt):
                    self.on_event(row, from_prompt)

    def end(self) -> None:
        """Generation is over: flush and close the stream."""
        self.finished = True
        self.on_end()

    def on_event(self, row: np.ndarray, from_prompt: bool) -> None:
        raise NotImplementedError

    def on_end(self) -> None:
        pass


class MidiEventIteratorStreamer(MidiEventStreamer):
    r"""Iterate over finished events while ``generate`` runs in another thread.

    Args:
        skip_prompt (`bool`, defaults to `False`): see [`MidiEventStreamer`].
        decode (`bool`, defaults to `False`): yield ``decode_row`` dicts instead of ``(8,)`` int64 id rows.
        timeout (`float`, *optional*): seconds to wait for the next event before ``queue.Empty`` is raised
            (None: wait forever).

    Example:

    ```python
    >>> from threading import Thread
    >>> streamer = MidiEventIteratorStreamer(skip_prompt=True, decode=True)
    >>> Thread(target=model.generate, kwargs=dict(input_ids=prompt, max_new_tokens=800, streamer=streamer)).start()
    >>> for event in streamer:
    ...     print(event["type"], event)
    ```
    """

    def __init__(self, skip_prompt: bool = False, decode: bool = False, timeout: float | None = None) -> None:
        super().__init__(skip_prompt=skip_prompt)
        if not isinstance(decode, bool):
            raise TypeError(f"decode must be a bool, not {type(decode).__name__}")
        self.decode = decode
        self.timeout = timeout
        self.queue: Queue = Queue()
        self.stop_signal = None

    def on_event(self, row: np.ndarray, from_prompt: bool) -> None:
        self.queue.put(decode_row(row) if self.decode else row, timeout=self.timeout)

    def on_end(self) -> None:
        self.queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self) -> MidiEventIteratorStreamer:
        return self

    def __next__(self) -> np.ndarray | dict[str, Any]:
        value = self.queue.get(timeout=self.timeout)
        if value is self.stop_signal:
            raise StopIteration()
        return value


class MidiFileStreamer(MidiEventStreamer):
    r"""Keep a MIDI file up to date with the events generated so far (prompt included).

    Every ``save_every`` finished events, and at the end, all rows so far are decoded with
    ``tokenizer.decode_midi`` and written to ``path`` (to a temporary file first, then renamed over ``path``,
    so a reader never sees a half-written file).

    Args:
        path (`str` or `os.PathLike`): the ``.mid`` file to write (its folder must exist).
        tokenizer (`MidiEventTransformerTokenizer`, *optional*): decodes the rows (default: a new one).
        save_every (`int`, defaults to 16): events between saves (1 = after every event; each save decodes the
            whole piece, so small values cost time on long pieces).
        include_prompt (`bool`, defaults to `True`): write the prompt's events too.
    """

    def __init__(self, path: str | os.PathLike, tokenizer: Any = None, save_every: int = 16,
                 include_prompt: bool = True) -> None:
        super().__init__(skip_prompt=not include_prompt)
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
            raise ValueError(f"save_every must be a positive int, got {save_every!r}")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ValueError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        if tokenizer is None:
            from ..tokenization_midi_event_transformer import MidiEventTransformerTokenizer

            tokenizer = MidiEventTransformerTokenizer()
        self.tokenizer = tokenizer
        self.save_every = save_every
        self.events: list[np.ndarray] = []  # the rows written to the file
        self._unsaved = 0
        self.saves = 0

    def on_event(self, row: np.ndarray, from_prompt: bool) -> None:
        self.events.append(row)
        self._unsaved += 1
        if self._unsaved >= self.save_every:
            self.save()

    def on_end(self) -> None:
        self.save()

    def save(self) -> None:
        """Decode the events so far and write them to ``path``."""
        rows = np.stack(self.events) if self.events else np.zeros((0, TOKENS_PER_EVENT), dtype=np.int64)
        midi = self.tokenizer.decode_midi(rows)
        handle, temporary = tempfile.mkstemp(suffix=".mid", dir=self.path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                midi.save(file=file)
            os.replace(temporary, self.path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        self._unsaved = 0
        self.saves += 1


class EventProgressStreamer(BaseStreamer):
    """A tqdm bar counting generated events (8 tokens each, the whole batch at once) and events per second.

    Pass it as ``model.generate(streamer=...)``: the first ``put`` is the prompt (not counted), then one ``put``
    per generated token position.
    """

    def __init__(self, total_events: int | None, disable: bool = False, description: str = "generating") -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_events, desc=description, unit="event", disable=disable, dynamic_ncols=True)
        self.prompt_seen = False
        self.tokens = 0

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.tokens += 1
        if self.tokens % TOKENS_PER_EVENT == 0:
            self.bar.update(1)

    def end(self) -> None:
        self.bar.close()


class StreamerGroup(BaseStreamer):
    """Hands every ``put`` and ``end`` of ``generate`` to each of ``streamers``, in order."""

    def __init__(self, streamers: Sequence[Any]) -> None:
        self.streamers = list(streamers)

    def put(self, value: Any) -> None:
        for streamer in self.streamers:
            streamer.put(value)

    def end(self) -> None:
        for streamer in self.streamers:
            streamer.end()


__all__ = [
    "EventProgressStreamer",
    "MidiEventIteratorStreamer",
    "MidiEventStreamer",
    "MidiFileStreamer",
    "StreamerGroup",
    "decode_row",
]
