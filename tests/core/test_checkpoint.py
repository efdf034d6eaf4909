from __future__ import annotations

import io
import json
import os
import stat
import zipfile

import numpy as np
import pytest
import torch

from napari_unet_cells.core import checkpoint as C
from napari_unet_cells.core import fileio
from napari_unet_cells.core.config import ModelConfig, NormalizationConfig
from napari_unet_cells.core.errors import UNetCellsError


@pytest.fixture
def model(tiny_config):
    return C.CellModel.new(
        tiny_config,
        seed=1,
        normalization=NormalizationConfig(p_low=2.0, p_high=99.0),
        provenance={"data": {"images": 3, "cells": 120}, "steps": 50, "metrics": {"ap50": 0.9}},
        extra={"min_size": 12},
    )


def test_round_trip(model, tmp_path):
    path = C.save_model(model, tmp_path / "m.npz")
    loaded = C.load_model(path)
    assert loaded.config == model.config
    assert loaded.normalization == model.normalization
    assert loaded.classes == ("background", "cell")
    assert loaded.provenance["steps"] == 50 and loaded.provenance["data"]["cells"] == 120
    assert loaded.provenance["package_version"] and loaded.provenance["saved"]
    assert loaded.extra == {"min_size": 12}
    for name, tensor in model.net.state_dict().items():
        assert torch.equal(tensor, loaded.net.state_dict()[name]), name
    assert not loaded.net.training
    x = torch.randn(1, 1, 44, 44)
    model.net.eval()
    with torch.no_grad():
        assert torch.equal(model.net(x), loaded.net(x))
    info = C.read_model_info(path)
    assert info["model_config"]["base"] == 4 and info["format_version"] == C.FORMAT_VERSION


def test_unet_alone_can_be_saved(tiny_config, tmp_path):
    from napari_unet_cells.core.unet import UNet

    C.save_model(UNet(tiny_config), tmp_path / "net.npz")
    assert C.load_model(tmp_path / "net.npz").config == tiny_config


def test_saved_file_has_normal_permissions(model, tmp_path):
    # like a plain open(): 0o666 minus the umask, not private to the user (mkstemp's 0o600)
    fileio._default_file_mode.cache_clear()
    umask = os.umask(0o022)
    try:
        path = C.save_model(model, tmp_path / "shared.npz")
    finally:
        os.umask(umask)
        fileio._default_file_mode.cache_clear()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_replacing_a_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "private.tif"
    path.write_bytes(b"old")
    path.chmod(0o600)
    fileio.atomic_write(path, lambda handle: handle.write(b"new"))
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_failed_save_keeps_previous_file(model, tmp_path, monkeypatch):
    path = C.save_model(model, tmp_path / "m.npz")
    before = path.read_bytes()

    def broken_savez(handle, **arrays):
        handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(C.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        C.save_model(C.CellModel.new(model.config, seed=2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temp file left
    C.load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(UNetCellsError, match=r"does not exist"):
        C.load_model(tmp_path / "nope.npz")


def test_truncated_file(model, tmp_path):
    path = C.save_model(model, tmp_path / "m.npz")
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 10, 100):
        path.write_bytes(data[:keep])
        with pytest.raises(UNetCellsError, match=r"m\.npz"):
            C.load_model(path)


def test_corrupt_bytes_are_detected(model, tmp_path):
    path = C.save_model(model, tmp_path / "m.npz")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("tensor:down.1.0.weight.npy")
    # flip bytes inside the stored (uncompressed) tensor data
    start = member.header_offset + 30 + len(member.filename) + 200
    data[start : start + 8] = bytes(255 - b for b in data[start : start + 8])
    path.write_bytes(bytes(data))
    with pytest.raises(UNetCellsError, match=r"damaged"):
        C.load_model(path)


def test_checksum_mismatch_is_detected(model, tmp_path):
    """A well-formed archive whose weights were swapped after saving."""
    path = C.save_model(model, tmp_path / "m.npz")
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["tensor:head.bias"] = arrays["tensor:head.bias"] + 1
    np.savez(path, **arrays)
    with pytest.raises(UNetCellsError, match="checksum"):
        C.load_model(path)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("not a model")
    with pytest.raises(UNetCellsError, match="not a napari-unet-cells model file"):
        C.load_model(text)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(UNetCellsError, match="not a napari-unet-cells model file"):
        C.load_model(other)
    header = tmp_path / "header.npz"
    np.savez(header, __meta__=np.frombuffer(b'{"format": "something else"}', np.uint8))
    with pytest.raises(UNetCellsError, match="foreign"):
        C.read_model_info(header)
    with pytest.raises(UNetCellsError, match="folder"):
        C.load_model(tmp_path)


def test_newer_format_asks_for_upgrade(model, tmp_path):
    path = C.save_model(model, tmp_path / "m.npz")
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["format_version"] = C.FORMAT_VERSION + 1
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(UNetCellsError, match="upgrade"):
        C.load_model(path)


def test_pickled_content_is_never_executed(tmp_path):
    """An object array would need pickle; loading refuses instead of running it."""

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    path = tmp_path / "evil.npz"
    buffer = io.BytesIO()
    np.save(buffer, np.array([Boom()], dtype=object), allow_pickle=True)
    meta = {
        "format": C.FORMAT_NAME,
        "format_version": 1,
        "model_config": {},
        "normalization": {},
        "classes": [],
        "sha256": "",
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__meta__.npy", _npy(json.dumps(meta).encode()))
        archive.writestr("tensor:head.weight.npy", buffer.getvalue())
    with pytest.raises(UNetCellsError):
        C.load_model(path)


def _npy(raw: bytes) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(raw, np.uint8))
    return buffer.getvalue()


def test_bad_save_targets(model, tmp_path):
    with pytest.raises(UNetCellsError, match="folder"):
        C.save_model(model, tmp_path)
    with pytest.raises(UNetCellsError, match="does not exist"):
        C.save_model(model, tmp_path / "missing" / "m.npz")
    with pytest.raises(UNetCellsError, match="JSON"):
        C.save_model(C.CellModel.new(model.config, provenance={"x": object()}), tmp_path / "a")
    with pytest.raises(UNetCellsError, match="class names"):
        C.save_model(C.CellModel.new(model.config, classes=("a", "b", "c")), tmp_path / "b")


def test_unknown_config_field_is_clear(model, tmp_path):
    path = C.save_model(model, tmp_path / "m.npz")
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["model_config"]["attention"] = True
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(UNetCellsError, match="newer version"):
        C.load_model(path)


def test_model_config_defaults_are_the_paper():
    assert ModelConfig() == ModelConfig(in_channels=1, n_classes=2, base=64, depth=4)


def test_building_and_loading_leave_the_global_rng_alone(model, tmp_path):
    path = C.save_model(model, tmp_path / "m.npz")
    state = torch.random.get_rng_state()
    C.load_model(path)
    C.CellModel.new(model.config, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_saving_without_overwrite_never_replaces_a_file(model, tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(b"theirs")
    with pytest.raises(UNetCellsError, match="overwrite=True"):
        C.save_model(model, path, overwrite=False)
    assert path.read_bytes() == b"theirs"
    new = C.save_model(model, tmp_path / "new.npz", overwrite=False)
    C.load_model(new)

    def appears_meanwhile(tmp):  # the name is taken while the file is being written
        C.save_model(model, tmp)
        path.with_name("late.npz").write_bytes(b"late")

    with pytest.raises(C.ModelFileExistsError, match="not replaced"):
        C.create_new_file(tmp_path / "late.npz", appears_meanwhile)
    assert (tmp_path / "late.npz").read_bytes() == b"late"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.npz", "m.npz", "new.npz"]
