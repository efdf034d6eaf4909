"""Placeholder: filled in by the figures work (see make_figures.py)."""

FIGURES: dict = {}
