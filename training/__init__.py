"""Standalone LoRA training and evaluation of the catalogue VLM (no dagster, no polars).

Entry points: `python -m training.train --config cfg.json`, `python -m training.evaluate --config
eval.json`. Submodules import heavy dependencies lazily; this package file imports nothing.
"""
