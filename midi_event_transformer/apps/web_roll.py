"""The web app's live piano roll, drawn by the page itself from the notes (no picture made on the server).

:func:`roll_value` turns a :class:`~midi_event_transformer.apps.web_jobs.PreviewFrame` into the value of a
``gradio.HTML`` component made by :func:`live_roll`: per sample a label and its notes as one text,
``"start,duration,pitch,channel;"`` per note (times in steps of 1/16 beat). The text only grows while a piece is
generated, so Gradio sends each frame as the notes appended since the last one. In the browser, the component's
script draws the notes on a canvas, one lane per sample, coloured by channel (drums in grey), on every new value;
it counts the notes it drew in the canvas's ``data-notes`` attribute and the frames in ``data-frames``. Time runs
in beats from the piece's start, the pitch range follows the notes.
"""

from __future__ import annotations

from typing import Any

from ..vocabulary import DRUM_CHANNEL, STEPS_PER_BEAT

ROLL_TEMPLATE = '<div class="met-roll"><canvas data-notes="0"></canvas></div>'

ROLL_JS = """
const palette = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f',
                 '#bcbd22', '#17becf'];  // matplotlib's tab10, as the samples' own piano rolls
let frames = 0;
const draw = () => {
  const canvas = element.querySelector('canvas');
  if (!canvas) return;
  const value = props.value;
  const samples = (value && value.samples) || [];
  const drums = value ? value.drum_channel : 9;
  const lanes = samples.map((sample) => sample.notes.split(';').filter(Boolean).map(
    (note) => note.split(',').map(Number)));
  const width = Math.max(canvas.parentElement.clientWidth || 0, 320);
  const laneHeight = samples.length > 1 ? 120 : 200;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = width * ratio;
  canvas.height = samples.length * laneHeight * ratio;
  canvas.style.width = width + 'px';
  canvas.style.height = samples.length * laneHeight + 'px';
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  let end = 4 * (value ? value.steps_per_beat : 16), low = 127, high = 0, count = 0;
  for (const notes of lanes) {
    for (const [start, duration, pitch, channel] of notes) {
      end = Math.max(end, start + Math.max(duration, 1));
      if (channel !== drums) { low = Math.min(low, pitch); high = Math.max(high, pitch); }
    }
    count += notes.length;
  }
  if (low > high) { low = 48; high = 72; }
  low = Math.max(0, low - 2); high = Math.min(127, high + 2);
  const scale = (width - 8) / end;
  lanes.forEach((notes, index) => {
    const top = index * laneHeight + 18, height = laneHeight - 22, step = height / (high - low + 1);
    ctx.fillStyle = '#f1f5f9';
    ctx.fillRect(0, top, width, height);
    ctx.fillStyle = '#334155';
    ctx.font = '12px sans-serif';
    ctx.fillText(`${samples[index].label}: ${notes.length} notes`, 4, top - 5);
    for (const [start, duration, pitch, channel] of notes) {
      const isDrum = channel === drums;
      ctx.fillStyle = isDrum ? 'rgba(64, 64, 64, 0.6)' : palette[channel % palette.length];
      const y = top + (high - Math.min(Math.max(pitch, low), high)) * step;
      ctx.fillRect(4 + start * scale, y, Math.max(2, (isDrum ? 1 : duration) * scale), Math.max(2, step));
    }
  });
  canvas.dataset.notes = String(count);
  canvas.dataset.frames = String(++frames);
};
watch('value', draw);
draw();
"""

ROLL_CSS = ".met-roll canvas { display: block; }"


def roll_value(frame: Any, labels: list[str] | None = None) -> dict[str, Any]:
    """The live roll's value for a ``PreviewFrame`` (``labels``: one per sample; default "Sample 1", ...)."""
    labels = labels or [f"Sample {index + 1}" for index in range(len(frame.notes))]
    return {"steps_per_beat": STEPS_PER_BEAT, "drum_channel": DRUM_CHANNEL,
            "samples": [{"label": label, "notes": "".join(f"{start},{duration},{pitch},{channel};"
                                                          for start, duration, pitch, channel in notes)}
                        for label, notes in zip(labels, frame.notes, strict=True)]}


def live_roll(gr: Any, **kwargs: Any) -> Any:
    """A ``gradio.HTML`` that draws :func:`roll_value` values (``kwargs``: more of its arguments, e.g. elem_id)."""
    return gr.HTML(None, html_template=ROLL_TEMPLATE, css_template=ROLL_CSS, js_on_load=ROLL_JS, **kwargs)


__all__ = ["ROLL_CSS", "ROLL_JS", "ROLL_TEMPLATE", "live_roll", "roll_value"]
