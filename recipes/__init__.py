"""Thin command-line recipes: ``python -m recipes.NAME --config recipes/configs/X.yaml [--key value]``."""
