"""napari-unet-cells: the 2015 U-Net (Ronneberger et al.) for cell segmentation in napari.

The public functions are imported lazily so that ``import napari_unet_cells`` (which
napari does at start-up) stays fast and does not import torch.

>>> import napari_unet_cells as uc
>>> image, labels = uc.synthetic_cells((128, 128), seed=1)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

# public name -> module (relative to this package) that defines it
_LAZY = {
    "UNet": ".core.unet",
    "ModelConfig": ".core.config",
    "NormalizationConfig": ".core.config",
    "CellModel": ".core.checkpoint",
    "load_model": ".core.checkpoint",
    "save_model": ".core.checkpoint",
    "read_model_info": ".core.checkpoint",
    "synthetic_cells": ".core.synthetic",
    "SyntheticConfig": ".core.synthetic",
    "UNetCellsError": ".core.errors",
    "predict": ".core.predict",
    "WeightMapConfig": ".core.config",
    "weight_map": ".core.weightmap",
    "weight_map_state": ".core.weightmap",
    "update_weight_map": ".core.weightmap",
    "separation_target": ".core.weightmap",
    "TrainConfig": ".core.config",
    "AugmentConfig": ".core.config",
    "finetune": ".core.train",
    "check_annotation": ".core.annotation",
    "AnnotationProject": ".core.annotation",
    "export_bioimageio": ".core.interop.bioimageio",
    "measure": ".core.measure",
}

__all__ = [  # noqa: RUF022 - kept in the order of _LAZY
    "__version__",
    "UNet",
    "ModelConfig",
    "NormalizationConfig",
    "CellModel",
    "load_model",
    "save_model",
    "read_model_info",
    "synthetic_cells",
    "SyntheticConfig",
    "UNetCellsError",
    "predict",
    "WeightMapConfig",
    "weight_map",
    "weight_map_state",
    "update_weight_map",
    "separation_target",
    "TrainConfig",
    "AugmentConfig",
    "finetune",
    "check_annotation",
    "AnnotationProject",
    "export_bioimageio",
    "measure",
]

if TYPE_CHECKING:  # pragma: no cover
    from .core.annotation import AnnotationProject, check_annotation
    from .core.checkpoint import CellModel, load_model, read_model_info, save_model
    from .core.config import (
        AugmentConfig,
        ModelConfig,
        NormalizationConfig,
        TrainConfig,
        WeightMapConfig,
    )
    from .core.errors import UNetCellsError
    from .core.interop.bioimageio import export_bioimageio
    from .core.measure import measure
    from .core.predict import predict
    from .core.synthetic import SyntheticConfig, synthetic_cells
    from .core.train import finetune
    from .core.unet import UNet
    from .core.weightmap import (
        separation_target,
        update_weight_map,
        weight_map,
        weight_map_state,
    )


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
