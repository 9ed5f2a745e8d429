"""Bundled toy assets: a tiny local model, tokenizer and synthetic task (no downloads)."""
