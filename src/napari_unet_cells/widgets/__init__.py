"""Thin napari dock widgets over the core; the only place that touches Qt."""
