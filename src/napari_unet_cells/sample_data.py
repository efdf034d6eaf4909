"""napari sample data: File > Open Sample > U-Net Cells."""

from __future__ import annotations


def synthetic_nuclei():
    """A 512x512 synthetic nuclei image (uint16) and its ground-truth instance labels."""
    from .core.synthetic import synthetic_cells

    image, labels = synthetic_cells((512, 512), seed=2015)
    return [
        (image, {"name": "synthetic nuclei"}, "image"),
        (labels, {"name": "synthetic nuclei ground truth"}, "labels"),
    ]
