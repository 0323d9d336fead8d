"""Training: tokenized datasets, windows and the collator, LoRA adapters. Depends on the core only."""
