"""Measuring what a model writes: held-out NLL, objective statistics of MIDI files, piano rolls and audio.
Depends on the core and on ``generation``."""
