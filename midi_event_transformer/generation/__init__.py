"""Generation around the model: requests and their options, model loading, ``generate_midi``, the
``midi-generation`` pipeline, prompts and controls, General MIDI names, track edits, lengths in musical time, the
sliding window and streamers. Depends on the core modules at the package root only."""
