"""A local web app for generating MIDI in the browser (Gradio; the optional extra ``pip install ".[app]"``).

Start it with ``midi-event-transformer app [--model DIR_OR_HUB_ID] [--host 127.0.0.1] [--port 7860]`` or::

    >>> from midi_event_transformer.apps.web import launch_app
    >>> launch_app("path/to/model")  # serves http://127.0.0.1:7860 until interrupted

The page is a thin layer over :func:`~midi_event_transformer.generation.api.generate_midi`: its inputs become an
:class:`~midi_event_transformer.apps.web_jobs.AppRequest`, a :class:`~midi_event_transformer.apps.web_jobs.GenerationJob`
generates in a worker thread while the page shows a progress bar (events, events/s) and the piano roll as the
events stream in (drawn by the page from the notes, :mod:`~midi_event_transformer.apps.web_roll`; the generation
never waits for it), and then each sample's ``.mid`` as soon as it is written, its piano roll, then (with
fluidsynth) its audio. The model and its precision can be chosen (int8 included: ``loading.DTYPE_NAMES``). An
uploaded MIDI file is continued, or gets a track added (an instrument or a drum kit) or one of its tracks written
again. The length is in events, seconds or bars; for seconds and bars (and a track edit, which ends where the file
ends) the progress bar shows the musical time reached. Generate requests are queued and run one after the other
(one model, one generation at a time); every tab gets its own results. Bad input (an unreadable MIDI file, an
impossible time signature, ...) is reported in the page.
"""

from __future__ import annotations

import html
import logging
import secrets
import shutil
import tempfile
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import InvalidMidiError, error_line
from ..evaluation.audio import audio_problem
from ..generation.general_midi import (
    DRUM_CHANNEL,
    DRUM_KITS,
    INSTRUMENT_NAMES,
    instrument_name,
    key_signature_name,
)
from ..generation.prompts import MAX_BPM
from ..generation.requests import DEFAULT_PROMPT_EVENTS, LoadingOptions
from .web_jobs import (
    AppRequest,
    GenerationCancelled,
    GenerationJob,
    JobUpdate,
    ModelStore,
    SampleFiles,
    write_samples_in_stages,
)
from .web_roll import live_roll, roll_value

logger = logging.getLogger(__name__)

INSTALL_HINT = 'the web app needs gradio: pip install "midi-event-transformer[app]" (or pip install gradio)'
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: The most samples one request may ask for (the page has this many result slots).
MAX_SAMPLES = 4
#: The largest ``events`` (and prompt events) the page offers.
MAX_EVENTS = 4096
AUTO = "auto"
NO_DRUMS = "none"
TIME_SIGNATURES = ("4/4", "3/4", "2/4", "2/2", "6/8", "9/8", "12/8", "5/4", "7/8")
#: Job folders kept on disk (older ones are deleted when a new job starts).
KEPT_JOBS = 8
#: What the page does with an uploaded MIDI file.
CONTINUE, ADD_TRACK, REGENERATE_TRACK, REWRITE_BARS = ("continue it", "add a track", "regenerate a track",
                                                       "rewrite bars")
PROMPT_ACTIONS = (CONTINUE, ADD_TRACK, REGENERATE_TRACK, REWRITE_BARS)
#: The units of the length (``events``, or ``seconds`` / ``bars`` of the ``length`` box).
LENGTH_UNITS = ("events", "seconds", "bars")
DEFAULT_LENGTH = 30.0

_CSS = """
#met-status .met-progress { display: flex; gap: 0.75em; align-items: center; }
#met-status progress { flex: 1; height: 0.9em; }
#met-status .met-error { color: #b91c1c; font-weight: 600; }
"""


def import_gradio() -> Any:
    """The ``gradio`` module, or an ImportError that says what to install."""
    try:
        import gradio
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return gradio


def key_choices() -> list[str]:
    """The 30 key signatures by name, major keys first (C major ... then minor keys)."""
    return [key_signature_name(sf, mi) for mi in (0, 1) for sf in range(-7, 8)]


def new_track_choices() -> list[tuple[str, str]]:
    """``(label, add_track value)`` of every track the page can add: the General MIDI instruments, then the drum
    kits."""
    return [(name, name) for name in INSTRUMENT_NAMES] + [(f"Drum kit: {kit}", kit) for kit in DRUM_KITS.values()]


def track_choices(rows: Any) -> list[tuple[str, int]]:
    """``(label, track number)`` of each track with notes in encoded rows ``(n, 8)``, numbered as
    ``midi-event-transformer tokenize`` shows them: ``"1: Violin (channel 2, 24 notes)"``."""
    from ..midi_writing import row_to_named_event

    notes: dict[int, int] = {}
    channels: dict[int, int] = {}
    patches: dict[tuple[int, int], int] = {}
    for row in rows.tolist():
        event = row_to_named_event(row)
        if event is None:
            continue
        name, values = event
        if name == "note":
            notes[values["track"]] = notes.get(values["track"], 0) + 1
            channels.setdefault(values["track"], values["channel"])
        elif name == "patch_change":
            patches.setdefault((values["track"], values["channel"]), values["patch"])
    choices = []
    for track in sorted(notes):
        channel = channels[track]
        sound = "drums" if channel == DRUM_CHANNEL else instrument_name(patches.get((track, channel), 0))
        choices.append((f"{track}: {sound} (channel {channel + 1}, {notes[track]} notes)", track))
    return choices


def _default(name: str) -> Any:
    """The page's starting value of a request option: the :class:`AppRequest` field's default."""
    return next(option.default for option in fields(AppRequest) if option.name == name)


def _option(name: str) -> Any:
    """The ``generation.requests`` field of a loading option (its help and choices)."""
    return next(option for option in fields(LoadingOptions) if option.name == name)


# ----------------------------------------------------------------------------------------- status line
def _status_html(text: str, *, error: bool = False, done: float | None = None, total: float | None = None) -> str:
    message = f'<p class="{"met-error" if error else "met-message"}" role="{"alert" if error else "status"}">' \
              f"{html.escape(text)}</p>"
    if done is None or total is None:
        return message
    return f'<div class="met-progress"><progress value="{done}" max="{total}"></progress></div>{message}'


def _time_text(amount: float, unit: str) -> str:
    return f"{amount:.1f} s" if unit == "s" else f"{amount:.2f} bars"


def _progress_bar(update: JobUpdate) -> tuple[float, float]:
    """``(value, max)`` of the progress bar: the musical time reached when the length is in time, else events."""
    if update.time_total is not None:
        return round(update.time_done or 0.0, 2), round(update.time_total, 2)
    if update.events_total is not None:
        return update.events_done, update.events_total
    return 0, 1  # not known yet (a track edit before its prompt is read)


def _with_warning(text: str, warning: str | None) -> str:
    """A status line followed by a request's warning (``requests.instrument_warning``'s line, as a sentence)."""
    if not warning:
        return text
    return f"{text} Warning: {warning}."


def _progress_html(update: JobUpdate) -> str:
    done, total = _progress_bar(update)
    if update.stage == "loading":
        return _status_html("loading the model ...", done=0, total=total)
    speed = f"{update.events_per_second:.1f} events/s"
    if update.time_total is not None:
        text = (f"{update.events_done} events, {_time_text(update.time_done or 0.0, update.time_unit)} of "
                f"{_time_text(update.time_total, update.time_unit)}, {speed}")
    elif update.events_total is None:
        text = f"{update.events_done} events, {speed}"
    else:
        text = f"{update.events_done} / {update.events_total} events, {speed}"
    return _status_html(_with_warning(text + ".", update.warning) if update.warning else text, done=done, total=total)


def done_text(seed: int, generated: list[int], prompt_events: int, seconds: float, events_per_second: float,
              warning: str | None = None) -> str:
    """The status line of a finished generation: the events each sample generated, the seconds the generation took
    and its speed (generated events per second, per sample), then the prompt's events apart, then the request's
    ``warning`` (new instruments the model never saw in training: ``GenerationJob.warning``) if any."""
    count = len(generated)
    events = (f"{generated[0]} events" if count == 1 else
              f"{', '.join(map(str, generated[:-1]))} and {generated[-1]} events")
    speed = f"{events_per_second:.1f} events/s" + (" per sample" if count > 1 else "")
    prompt = f", plus {prompt_events} prompt event{'s' if prompt_events != 1 else ''}" + (" each" if count > 1
                                                                                           else "")
    return _with_warning(f"Done: {count} sample{'s' if count > 1 else ''}, seed {seed}: {events} generated in "
                        f"{seconds:.1f} s, {speed}{prompt if prompt_events else ''}.", warning)


def _error_text(error: BaseException) -> str:
    if isinstance(error, InvalidMidiError):  # uploads live in a temporary folder: name the file only
        return f"{Path(error.source).name} is not a readable MIDI file: {error.problem}"
    return error_line(error)


# ----------------------------------------------------------------------------------------- the page
@dataclass
class _Widgets:
    """The page's input components: ``options`` by the :class:`AppRequest` field each sets (every field but
    seconds and bars, which the ``length`` box sets as ``length_unit`` says), ``page`` the page's own (the open
    tab, what to do with an upload, the length's unit and box, the random-seed box)."""

    options: dict[str, Any]
    page: dict[str, Any]

    def inputs(self) -> list[Any]:
        return [*self.options.values(), *self.page.values()]

    def request(self, values: list[Any]) -> AppRequest:
        """The :class:`AppRequest` of the inputs' values (in :meth:`inputs` order); a random seed when asked."""
        v = dict(zip([*self.options, *self.page], values, strict=True))

        def auto(value: Any) -> Any:
            return None if value in (None, "", AUTO, NO_DRUMS) else value

        def number(name: str, kind: type = int) -> Any:
            if v[name] is None:
                raise ValueError(f"{name.replace('_', ' ')} is empty")
            return kind(v[name])

        def optional(name: str) -> Any:  # 0 or empty: auto (Gradio shows an empty number box as 0)
            return None if v[name] in (None, "", 0) else number(name)

        seed = secrets.randbelow(2**31) if v["random_seed"] or v["seed"] is None else number("seed")
        request = dict(model=v["model"] or None, dtype=auto(v["dtype"]), temperature=number("temperature", float),
                       top_p=number("top_p", float), top_k=number("top_k"), seed=seed,
                       num_samples=number("num_samples"), disable_control_change=bool(v["disable_control_change"]),
                       context_events=optional("context_events"))
        unit = v["length_unit"] or "events"
        if v["mode"] == "continue" and v["prompt_action"] == REWRITE_BARS:
            request["events"] = None  # the span's own length: no events, seconds or bars
        elif unit == "events":
            request["events"] = number("events")
        elif unit in LENGTH_UNITS:
            if v["length"] is None:
                raise ValueError(f"the length in {unit} is empty")
            request["events"] = None  # the length in time ends the piece
            request[unit] = float(v["length"])
        else:
            raise ValueError(f"unknown length unit {unit!r}; choose one of {', '.join(LENGTH_UNITS)}")
        if v["mode"] == "continue":
            action = v["prompt_action"] or CONTINUE
            if not v["prompt"]:
                raise ValueError(f"upload a MIDI file to {action.removesuffix(' it')} "
                                 "(or choose the New piece tab)")
            request["prompt"] = v["prompt"]
            if action == CONTINUE:
                request["prompt_events"] = number("prompt_events")
            elif action == ADD_TRACK:
                if not v["add_track"]:
                    raise ValueError("choose the new track's instrument or drum kit")
                request["add_track"] = v["add_track"]
            elif action == REGENERATE_TRACK:
                if v["regenerate_track"] in (None, ""):
                    raise ValueError("choose the track to regenerate (the file's tracks are listed once it is "
                                     "uploaded)")
                request["regenerate_track"] = int(v["regenerate_track"])
            elif action == REWRITE_BARS:
                if not (v["infill_bars"] or "").strip():
                    raise ValueError("give the bars to rewrite, e.g. 9-12")
                request["infill_bars"] = v["infill_bars"].strip()
                request["infill_tracks"] = [int(track) for track in v["infill_tracks"] or []] or None
            else:
                raise ValueError(f"unknown action {action!r}; choose one of {', '.join(PROMPT_ACTIONS)}")
        else:
            request.update(instruments=list(v["instruments"] or []) or None, drum_kit=auto(v["drum_kit"]),
                           time_signature=auto(v["time_signature"]), key=auto(v["key"]),
                           bpm=float(v["bpm"]) if v["bpm"] else None,  # bpm 0: the model chooses
                           max_rest_bars=float(v["max_rest_bars"]) if v["max_rest_bars"] else None)  # 0: no limit
        return AppRequest(**request)


@dataclass
class _Results:
    """The output components: the status line, the live piano roll and the slots of each sample."""

    status: Any
    live_roll: Any
    seed: Any
    groups: list[Any]
    midi_files: list[Any]
    piano_rolls: list[Any]
    audios: list[Any]
    notes: list[Any]

    def outputs(self) -> list[Any]:
        return [self.status, self.live_roll, self.seed, *self.groups, *self.midi_files, *self.piano_rolls,
                *self.audios, *self.notes]


class MidiApp:
    """The web app: its page (``self.blocks``, a ``gradio.Blocks``), its model and its files.

    Args:
        model: the model requests use by default: a loaded model, a directory, a Hub id, or None for the embedded
            model.
        device, dtype: as in :func:`~midi_event_transformer.generation.loading.load_model_and_tokenizer`.
        output_dir: where generated files go (default: a temporary folder removed by :meth:`close`).
    """

    def __init__(self, model: Any = None, *, device: Any = None, dtype: Any = None,
                 output_dir: str | Path | None = None) -> None:
        self.gr = import_gradio()
        self.models = ModelStore(model, device=device, dtype=dtype)
        self.dtype_choices = [AUTO, *_option("dtype").metadata["choices"]]
        self._own_dir = output_dir is None
        self.output_dir = Path(tempfile.mkdtemp(prefix="midi-event-transformer-app-") if output_dir is None
                               else output_dir)
        self.audio_problem = audio_problem()
        self.model_label = model if isinstance(model, str) else ("the embedded model" if model is None else
                                                                 "the model passed to the app")
        self.blocks = self._build()

    # ------------------------------------------------------------------ layout
    def _build(self) -> Any:
        gr = self.gr
        with gr.Blocks(title="midi-event-transformer", analytics_enabled=False) as blocks:
            gr.Markdown("## midi-event-transformer\nGenerate MIDI with a hierarchical event transformer: choose "
                        "instruments or upload a piece to continue, press **Generate**, listen and download.")
            with gr.Row():
                with gr.Column(scale=2):
                    widgets = self._inputs()
                    with gr.Row():
                        generate = gr.Button("Generate", variant="primary", elem_id="met-generate")
                        stop = gr.Button("Stop", elem_id="met-stop")
                with gr.Column(scale=3):
                    results = self._outputs(widgets.options["seed"])
            self._widgets, self._results = widgets, results
            run = generate.click(self._generate, inputs=widgets.inputs(), outputs=results.outputs(),
                                 concurrency_limit=1, concurrency_id="generate", show_progress="minimal",
                                 show_progress_on=[results.status])
            stop.click(lambda: _status_html("Stopped."), None, results.status, cancels=[run], queue=False)
            prompt_file, kept_events = widgets.options["prompt"], widgets.options["prompt_events"]
            tracks, rewritten = widgets.options["regenerate_track"], widgets.options["infill_tracks"]
            prompt_file.upload(self._check_upload, inputs=[prompt_file, widgets.page["prompt_action"], kept_events],
                               outputs=[results.status, tracks, rewritten])
            prompt_file.clear(lambda: (gr.update(choices=[], value=None), gr.update(choices=[], value=[])), None,
                              [tracks, rewritten])
        return blocks

    def _inputs(self) -> _Widgets:
        gr = self.gr
        with gr.Accordion("Model", open=True):
            model = gr.Textbox(label="Model", value=self.model_label if isinstance(self.models.default, str) else "",
                               placeholder=self.model_label, elem_id="met-model", show_label=False,
                               info="a model directory or Hugging Face Hub id; empty: " + self.model_label)
            app_dtype = self.models.dtype
            dtype = gr.Dropdown(self.dtype_choices, value=app_dtype if app_dtype in self.dtype_choices else AUTO,
                                label="Precision (dtype)", elem_id="met-dtype",
                                info=f"{AUTO}: the app's. {_option('dtype').metadata['help'][0].upper()}"
                                     f"{_option('dtype').metadata['help'][1:]}.")
        mode = gr.Textbox("new", visible=False)  # the open tab; a page value (not gr.State, kept on the server)
        with gr.Tabs():
            with gr.Tab("New piece", elem_id="met-tab-new") as new_tab:
                instruments = gr.Dropdown(list(INSTRUMENT_NAMES), multiselect=True, filterable=True, value=[],
                                          label="Instruments", info="type to search the General MIDI list",
                                          elem_id="met-instruments")
                with gr.Row():
                    drum_kit = gr.Dropdown([NO_DRUMS, *DRUM_KITS.values()], value=NO_DRUMS, label="Drum kit",
                                           elem_id="met-drum-kit")
                    bpm = gr.Slider(0, MAX_BPM, value=0, step=1, label="BPM (0: the model chooses)",
                                    elem_id="met-bpm")
                with gr.Row():
                    time_signature = gr.Dropdown([AUTO, *TIME_SIGNATURES], value=AUTO, allow_custom_value=True,
                                                 label="Time signature", info="or type one, e.g. 7/4",
                                                 elem_id="met-time-signature")
                    key = gr.Dropdown([AUTO, *key_choices()], value=AUTO, label="Key", elem_id="met-key")
                max_rest_bars = gr.Number(value=_default("max_rest_bars") or 0, minimum=0, step=0.5,
                                          label="Longest rest of a part (bars)",
                                          info="an instrument silent this long plays the next note; 0: no limit",
                                          elem_id="met-max-rest-bars")
            with gr.Tab("Continue a MIDI file", elem_id="met-tab-continue") as continue_tab:
                prompt_file = gr.File(label="MIDI file", file_types=[".mid", ".midi"], type="filepath",
                                      elem_id="met-prompt-file")
                prompt_action = gr.Radio(list(PROMPT_ACTIONS), value=CONTINUE, label="With the file",
                                         info="a track edit uses the whole file and ends where it ends",
                                         elem_id="met-prompt-action")
                kept_events = gr.Slider(1, MAX_EVENTS, value=DEFAULT_PROMPT_EVENTS, step=1,
                                        label="Events of the file to keep (BOS included)",
                                        elem_id="met-prompt-events")
                new_track = gr.Dropdown(new_track_choices(), value=None, filterable=True, visible=False,
                                        label="New track", info="type to search the General MIDI list or a drum kit",
                                        elem_id="met-new-track")
                old_track = gr.Dropdown([], value=None, visible=False, label="Track to regenerate",
                                        info="tracks with notes, numbered as midi-event-transformer tokenize shows "
                                             "them", elem_id="met-regenerate-track")
                with gr.Row(visible=False) as rewrite_row:
                    rewrite_bars = gr.Textbox(value="", label="Bars to rewrite", placeholder="9-12",
                                              info="both included; bar 1 starts at time 0", elem_id="met-infill-bars")
                    rewrite_tracks = gr.Dropdown([], value=[], multiselect=True, label="Tracks to rewrite",
                                                 info="none chosen: every track", elem_id="met-infill-tracks")
        # set in the browser (no round trip to the server): a Generate pressed right after a tab change sees it
        new_tab.select(None, None, mode, js="() => 'new'")
        continue_tab.select(None, None, mode, js="() => 'continue'")
        prompt_action.change(lambda action: (gr.update(visible=action == CONTINUE),
                                             gr.update(visible=action == ADD_TRACK),
                                             gr.update(visible=action == REGENERATE_TRACK),
                                             gr.update(visible=action == REWRITE_BARS)),
                             prompt_action, [kept_events, new_track, old_track, rewrite_row], queue=False)
        with gr.Row():
            length_unit = gr.Radio(list(LENGTH_UNITS), value="events", label="Length in",
                                   info="with a track edit, events: the new track's at most", elem_id="met-length-unit")
            length = gr.Number(value=DEFAULT_LENGTH, minimum=0, label="Seconds or bars", visible=False,
                               elem_id="met-length")
        events = gr.Slider(1, MAX_EVENTS, value=_default("events"), step=1, label="Events to generate",
                           elem_id="met-events")
        length_unit.change(lambda unit: (gr.update(visible=unit == "events"),
                                         gr.update(visible=unit != "events", label=f"Length in {unit}")),
                           length_unit, [events, length], queue=False)
        with gr.Accordion("Sampling", open=True):
            with gr.Row():
                temperature = gr.Slider(0.1, 2.0, value=_default("temperature"), step=0.01, label="Temperature",
                                        elem_id="met-temperature")
                top_p = gr.Slider(0.01, 1.0, value=_default("top_p"), step=0.01, label="Top-p", elem_id="met-top-p")
                top_k = gr.Slider(0, 128, value=_default("top_k"), step=1, label="Top-k (0: off)",
                                  elem_id="met-top-k")
            with gr.Row():
                seed = gr.Number(value=_default("seed"), precision=0, minimum=0, maximum=2**31 - 1, label="Seed",
                                 elem_id="met-seed")
                random_seed = gr.Checkbox(value=True, label="Random seed", elem_id="met-random-seed")
                num_samples = gr.Slider(1, MAX_SAMPLES, value=_default("num_samples"), step=1, label="Samples",
                                        elem_id="met-samples")
            with gr.Row():
                no_control_change = gr.Checkbox(value=_default("disable_control_change"),
                                                label="No control change (pedal, volume, ...)",
                                                elem_id="met-no-control-change")
                window = gr.Number(value=_default("context_events") or 0, precision=0, minimum=0,
                                   label="Window (events the model sees)",
                                   info="0 or empty: the model's training window; longer pieces go on from the "
                                        "last events", elem_id="met-context-events")
        options = dict(model=model, dtype=dtype, instruments=instruments, drum_kit=drum_kit, bpm=bpm,
                       time_signature=time_signature, key=key, max_rest_bars=max_rest_bars,
                       prompt=prompt_file, prompt_events=kept_events,
                       add_track=new_track, regenerate_track=old_track, infill_bars=rewrite_bars,
                       infill_tracks=rewrite_tracks, events=events, temperature=temperature,
                       top_p=top_p, top_k=top_k, seed=seed, num_samples=num_samples,
                       disable_control_change=no_control_change, context_events=window)
        page = dict(mode=mode, prompt_action=prompt_action, length_unit=length_unit, length=length,
                    random_seed=random_seed)
        return _Widgets(options, page)

    def _outputs(self, seed: Any) -> _Results:
        gr = self.gr
        status = gr.HTML(_status_html("Choose the options and press Generate."), elem_id="met-status")
        roll = live_roll(gr, elem_id="met-live-roll")  # drawn by the page from the notes
        if self.audio_problem is not None:
            gr.Markdown(f"**No audio players here:** {self.audio_problem}", elem_id="met-audio-note")
        groups, midi_files, piano_rolls, audios, notes = [], [], [], [], []
        for index in range(MAX_SAMPLES):
            with gr.Column(visible=False, variant="panel", elem_id=f"met-sample-{index}") as group:
                midi_files.append(gr.File(label=f"Sample {index + 1} (.mid)", interactive=False,
                                          elem_id=f"met-sample-{index}-midi"))
                piano_rolls.append(gr.Image(label=f"Sample {index + 1} piano roll", type="filepath",
                                            interactive=False, elem_id=f"met-sample-{index}-roll"))
                audios.append(gr.Audio(label=f"Sample {index + 1} audio", type="filepath", interactive=False,
                                       visible=self.audio_problem is None, elem_id=f"met-sample-{index}-audio"))
                notes.append(gr.Markdown(visible=False, elem_id=f"met-sample-{index}-note"))
            groups.append(group)
        return _Results(status, roll, seed, groups, midi_files, piano_rolls, audios, notes)

    # ------------------------------------------------------------------ handlers
    def _check_upload(self, path: str | None, action: str | None, kept_events: float) -> tuple[str, Any, Any]:
        """Read the uploaded file at once, so that a file that is not MIDI is reported before Generate, and list
        its tracks for "regenerate a track" and "rewrite bars"."""
        from ..generation.prompts import prompt_from_midi

        no_tracks = self.gr.update(choices=[], value=None)
        none_rewritten = self.gr.update(choices=[], value=[])
        if not path:
            return _status_html("Choose the options and press Generate."), no_tracks, none_rewritten
        try:
            rows = prompt_from_midi(path, None, tokenizer=self.models.tokenizer())
        except (ValueError, TypeError) as error:
            return _status_html(_error_text(error), error=True), no_tracks, none_rewritten
        tracks = track_choices(rows)
        text = f"{Path(path).name}: {len(rows) - 1} events, tracks with notes: " + (
            "; ".join(label for label, _ in tracks) or "none") + "."
        if (action or CONTINUE) == CONTINUE:
            text += f" The first {min(len(rows), int(kept_events or DEFAULT_PROMPT_EVENTS)) - 1} are continued."
        return (_status_html(text), self.gr.update(choices=tracks, value=tracks[0][1] if tracks else None),
                self.gr.update(choices=tracks, value=[]))

    def _job_dir(self) -> Path:
        jobs = sorted((p for p in self.output_dir.glob("job-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in jobs[:max(0, len(jobs) - KEPT_JOBS + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        directory = self.output_dir / f"job-{uuid.uuid4().hex[:12]}"
        directory.mkdir(parents=True)
        return directory

    def _generate(self, *values: Any):
        """The Generate button: a generator of page updates (progress and the live piano roll, then each sample's
        ``.mid`` as soon as it is written, its piano roll, its audio)."""
        gr = self.gr
        results = self._results
        try:
            request = self._widgets.request(list(values))
        except ValueError as error:
            yield {results.status: _status_html("Cannot generate: " + _error_text(error), error=True)}
            return
        directory = self._job_dir()
        job = GenerationJob(request, self.models).start()  # the page is cleared while the generation starts
        audio = self.audio_problem is None
        cleared = {group: gr.update(visible=False) for group in results.groups}  # the last request's files go
        cleared.update({output: None for output in (*results.midi_files, *results.piano_rolls)})
        cleared.update({player: gr.update(value=None, visible=audio) for player in results.audios})
        cleared.update({note: gr.update(value="", visible=False) for note in results.notes})
        try:
            yield {results.status: _status_html("waiting for the model ...", done=0, total=request.events or 1),
                   results.live_roll: None, **cleared}
            for update in job.updates():
                page = {results.status: _progress_html(update)}
                if update.frame is not None:
                    page[results.live_roll] = roll_value(update.frame)
                yield page
            midis = job.result()
            preview = job.preview
            done = done_text(request.seed, [sample.generated_events for sample in preview.samples],
                             preview.prompt_events, preview.seconds(), preview.events_per_second(), job.warning)
            bar = dict(zip(("done", "total"), _progress_bar(job.progress()), strict=True))
            for stage, samples in write_samples_in_stages(midis, directory, request.seed, audio=audio,
                                                          highlight=job.rewritten_beats()):
                still = {"midi": "drawing the piano roll" + (" and rendering the audio" if audio else ""),
                         "piano_roll": "rendering the audio" if audio else None}.get(stage)
                page = self._sample_outputs(stage, samples)
                page[results.status] = _status_html(done + (f" Now {still} ..." if still else ""), **bar)
                if stage == "midi":
                    page[results.seed] = request.seed
                elif stage == "piano_roll":
                    page[results.live_roll] = None  # the samples' own rolls replace it
                yield page
        except GenerationCancelled:
            yield {results.status: _status_html("Stopped.")}
            return
        except (ValueError, TypeError) as error:  # the request's fault: say so in the page
            yield {results.status: _status_html("Cannot generate: " + _error_text(error), error=True)}
            return
        except Exception as error:  # the app keeps serving; the log has the traceback
            logger.exception("generation failed")
            yield {results.status: _status_html(f"generation failed: {_error_text(error)}", error=True)}
            return
        finally:
            if job.running:  # the page went away or Stop was pressed
                job.cancel()

    def _sample_outputs(self, stage: str, samples: list[SampleFiles]) -> dict[Any, Any]:
        """The page's sample slots after a stage of ``write_samples_in_stages`` (the first update of the request
        emptied and hid them): the ``.mid`` files (and their slots shown), then the piano rolls, then the audio
        players and notes. Plain values wherever they do (a ``gr.update`` costs the server more)."""
        gr = self.gr
        results = self._results
        page: dict[Any, Any] = {}
        for index, sample in enumerate(samples[:MAX_SAMPLES]):
            if stage == "midi":
                page[results.groups[index]] = gr.update(visible=True)
                page[results.midi_files[index]] = str(sample.midi)
            elif stage == "piano_roll":
                page[results.piano_rolls[index]] = str(sample.piano_roll)
            elif stage == "audio" and sample.audio is not None:
                page[results.audios[index]] = str(sample.audio)
            elif stage == "audio":
                page[results.audios[index]] = gr.update(visible=False)
                page[results.notes[index]] = gr.update(value=sample.note or "", visible=True)
        return page

    # ------------------------------------------------------------------ serving
    def launch(self, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT, *, prevent_thread_lock: bool = False,
               quiet: bool = False, **launch_kwargs: Any) -> Any:
        """Serve the page on ``http://host:port`` (blocks unless ``prevent_thread_lock``); returns the Blocks."""
        gr = self.gr
        self.blocks.queue(default_concurrency_limit=1)
        self.blocks.launch(server_name=host, server_port=port, prevent_thread_lock=prevent_thread_lock,
                           quiet=quiet, ssr_mode=False, show_error=True, css=_CSS, theme=gr.themes.Default(),
                           allowed_paths=[str(self.output_dir)], **launch_kwargs)
        return self.blocks

    def close(self) -> None:
        """Stop serving and remove the app's temporary folder."""
        self.blocks.close()
        if self._own_dir:
            shutil.rmtree(self.output_dir, ignore_errors=True)


def launch_app(model: Any = None, *, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT, device: Any = None,
               dtype: Any = None, **launch_kwargs: Any) -> MidiApp:
    """Build the app around ``model`` and serve it (see :class:`MidiApp` and :meth:`MidiApp.launch`).

    Args:
        model: a loaded model, a directory, a Hub id, or None for the embedded model.
        host, port: where to serve (default ``127.0.0.1:7860``; ``port=None`` takes the first free one from 7860).
        device, dtype: as in :func:`~midi_event_transformer.generation.loading.load_model_and_tokenizer`.
        launch_kwargs: ``prevent_thread_lock=True`` to return at once, ``quiet``, other ``gradio.Blocks.launch``
            arguments.

    Returns:
        the :class:`MidiApp` (its ``close()`` stops the server).

    Raises:
        ImportError: gradio is not installed (the message says what to install).
    """
    app = MidiApp(model, device=device, dtype=dtype)
    app.launch(host, port, **launch_kwargs)
    return app


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "MAX_EVENTS", "MAX_SAMPLES", "MidiApp", "import_gradio", "launch_app"]
