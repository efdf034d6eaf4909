"""What a model says about itself, read without loading its network.

For choosers (the Predict dock, the command line): a model's network config and its
recommended post-processing from the file header, the tile sizes valid for a network,
and the "0 means no seeds" convention of a seed-threshold control. No torch import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import InstanceConfig, ModelConfig, config_from_dict
from .errors import UNetCellsError

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import CellModel

#: tile sizes offered: every valid size up to ``SMALL_TILES_UP_TO`` px, then one per 64 px
SMALL_TILES_UP_TO = 256
LARGEST_TILE = 2048


def _header_or_model(model: CellModel | str | Path | None) -> tuple[dict | None, Any]:
    """(the file header, None) for a path or the bundled model; (None, model) otherwise."""
    from .registry import bundled_model_path, registered_models

    if model is None:
        model = bundled_model_path()
        if model is None:
            return None, None
    if isinstance(model, str) and model in registered_models():
        return None, registered_models()[model]
    if isinstance(model, str | Path):
        from .checkpoint import read_model_info

        try:
            return read_model_info(model), None
        except OSError as err:
            raise UNetCellsError(f"Cannot read the model file {str(model)!r}: {err}") from None
    return None, model


def model_config_of(model: CellModel | str | Path | None) -> ModelConfig:
    """The network config of a model, read from the file header for a path.

    Parameters
    ----------
    model : CellModel, str, Path or None
        A model, a registered model's name, a model file, or None for the bundled model.

    Returns
    -------
    ModelConfig
        The model's config; the default ``ModelConfig()`` when no model is bundled.

    Raises
    ------
    UNetCellsError
        The file is no model file, or its header holds no valid network config.
    """
    header, loaded = _header_or_model(model)
    if header is None and loaded is None:
        return ModelConfig()
    try:
        if header is not None:
            return config_from_dict(ModelConfig, header["model_config"])
        config = loaded.config
    except (KeyError, TypeError, AttributeError) as err:
        raise UNetCellsError(f"The model holds no valid network config ({err!r}).") from None
    if not isinstance(config, ModelConfig):
        raise UNetCellsError(f"The model holds no network config, got {type(config).__name__}.")
    return config


def instance_defaults_of(model: CellModel | str | Path | None) -> InstanceConfig:
    """The post-processing a model recommends (``extra["instances"]``), else the defaults.

    Reads only the header of a model file (the network is not loaded).

    Parameters
    ----------
    model : CellModel, str, Path or None
        A model, a registered model's name, a model file, or None for the bundled model.

    Returns
    -------
    InstanceConfig
        The stored recommendation, or ``InstanceConfig()`` when the model stores none.

    Raises
    ------
    UNetCellsError
        The file is no model file, or its stored recommendation is not valid.
    """
    header, loaded = _header_or_model(model)
    extra = header.get("extra", {}) if header is not None else getattr(loaded, "extra", {})
    if not isinstance(extra, dict):
        raise UNetCellsError("The model's extra information is not a mapping.")
    stored = extra.get("instances")
    if not stored:
        return InstanceConfig()
    try:
        return config_from_dict(InstanceConfig, stored)
    except (TypeError, ValueError) as err:
        raise UNetCellsError(
            f"The model's recommended post-processing {stored!r} is not valid ({err})."
        ) from None


def valid_tile_sizes(config: ModelConfig, largest: int = LARGEST_TILE) -> list[int]:
    """Tile sizes (px) to offer for a network: valid inputs that can tile an image.

    Every valid size up to ``SMALL_TILES_UP_TO`` px, then about one per 64 px up to
    ``largest``, each snapped down to a valid size (``core.tiling.snap_tile``).

    Parameters
    ----------
    config : ModelConfig
        The network (its depth and padding decide which sizes are valid).
    largest : int
        The largest tile to offer, px.

    Returns
    -------
    list of int
        Sorted, unique input tile sizes, px per side.
    """
    from .tiling import snap_tile

    small = range(1, SMALL_TILES_UP_TO + 1, 2**config.depth)
    large = range(SMALL_TILES_UP_TO, largest + 1, 64)
    return sorted({snap_tile(s, config.depth, config.padding) for s in (*small, *large)})


def seed_threshold_from_control(value: float | None) -> float | None:
    """A seed-threshold control's value as ``InstanceConfig.seed_threshold``: 0 is no seeds.

    Parameters
    ----------
    value : float or None
        The control's value (a probability, 0..1).

    Returns
    -------
    float or None
        None for 0 (or None), else the value as a float.
    """
    return None if value is None else (float(value) or None)


def seed_threshold_to_control(seed_threshold: float | None) -> float:
    """``InstanceConfig.seed_threshold`` as a control shows it: None (no seeds) is 0.

    Parameters
    ----------
    seed_threshold : float or None
        A probability, or None for no seeds.

    Returns
    -------
    float
        The value for the control; 0.0 for None.
    """
    return float(seed_threshold) if seed_threshold is not None else 0.0
