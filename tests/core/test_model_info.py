"""core.model_info: a model's config and recommended post-processing without loading the
network, the tile sizes offered for a network, and the "0 means no seeds" convention."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_cells.core import model_info as mi
from napari_unet_cells.core.checkpoint import CellModel, save_model
from napari_unet_cells.core.config import InstanceConfig, ModelConfig
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.registry import register_model, unregister_model
from napari_unet_cells.core.unet import is_valid_input_size

TINY = ModelConfig(base=4, depth=2, dropout=0.0)


def test_config_and_defaults_from_a_file_header_a_model_and_a_name(tmp_path, monkeypatch):
    model = CellModel.new(TINY, seed=0)
    model.extra["instances"] = {"threshold": 0.4, "seed_threshold": 0.8, "min_size": 7}
    path = save_model(model, tmp_path / "m.npz")
    import napari_unet_cells.core.checkpoint as checkpoint

    def no_loading(*args, **kwargs):
        raise AssertionError("the network must not be loaded")

    monkeypatch.setattr(checkpoint, "load_model", no_loading)
    expected = InstanceConfig(threshold=0.4, seed_threshold=0.8, min_size=7)
    register_model("model info test", model)
    try:
        for source in (path, str(path), model, "model info test"):
            assert mi.model_config_of(source) == TINY
            assert mi.instance_defaults_of(source) == expected
    finally:
        unregister_model("model info test")
    assert mi.instance_defaults_of(CellModel.new(TINY, seed=0)) == InstanceConfig()


def test_bundled_model_is_none_and_no_bundled_model_gives_defaults(monkeypatch):
    from napari_unet_cells.core import registry

    bundled = registry.bundled_model_path()
    if bundled is not None:
        assert mi.model_config_of(None) == mi.model_config_of(bundled)
    monkeypatch.setattr(registry, "bundled_model_path", lambda: None)
    assert mi.model_config_of(None) == ModelConfig()
    assert mi.instance_defaults_of(None) == InstanceConfig()


@pytest.mark.parametrize(
    "stored",
    [
        {"threshold": "high"},  # TypeError in the config's checks
        {"threshold": 1.5},  # out of range
        {"no such setting": 1},  # from a newer version
        ["not", "a", "mapping"],
    ],
)
def test_invalid_stored_defaults_are_one_clear_error(stored):
    model = CellModel.new(TINY, seed=0)
    model.extra["instances"] = stored
    with pytest.raises(UNetCellsError):
        mi.instance_defaults_of(model)


def test_not_a_model_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    for call in (mi.model_config_of, mi.instance_defaults_of):
        with pytest.raises(UNetCellsError):
            call(bad)
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(UNetCellsError):
        mi.model_config_of(tmp_path / "foreign.npz")


def test_valid_tile_sizes():
    for config in (TINY, ModelConfig()):
        sizes = mi.valid_tile_sizes(config)
        assert sizes == sorted(set(sizes)) and sizes[-1] <= mi.LARGEST_TILE
        assert all(is_valid_input_size(s, config.depth, config.padding) for s in sizes)
        small = [s for s in sizes if s <= mi.SMALL_TILES_UP_TO]
        assert np.all(np.diff(small) == 2**config.depth)  # every valid size, none skipped
    assert 108 in mi.valid_tile_sizes(TINY) and 572 in mi.valid_tile_sizes(ModelConfig())


def test_zero_seed_threshold_means_no_seeds():
    assert mi.seed_threshold_from_control(0.0) is None
    assert mi.seed_threshold_from_control(None) is None
    assert mi.seed_threshold_from_control(0.7) == 0.7
    assert mi.seed_threshold_to_control(None) == 0.0
    assert mi.seed_threshold_to_control(0.9) == 0.9
