"""The Hugging Face Hub side: converting SkyTNT/midi-model checkpoints, model and adapter cards, publishing.
Depends on the core, ``generation`` and ``evaluation``."""
