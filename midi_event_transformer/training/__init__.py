"""Training: tokenized datasets, windows (plain or fill-in-the-middle) and the collator, LoRA adapters. Depends on
the core and on ``generation.fim`` (the FIM layout) only."""
