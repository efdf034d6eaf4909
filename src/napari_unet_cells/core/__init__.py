"""Headless core: numpy in, numpy out. Never imports napari or Qt.

Modules are imported on demand (``from napari_unet_cells.core import unet``), so
importing this package does not import torch.
"""
