"""bioimage.io export and import (core/interop/bioimageio.py), offline, CPU, tiny network.

One package is exported per module (module fixture) and shared; every test here runs with
sockets disabled, so nothing may reach the network (bioimageio would otherwise try to
check URLs).
"""

from __future__ import annotations

import json
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bioimageio.core", reason="needs the interop extra")

import yaml

from napari_unet_cells.core.checkpoint import (
    CellModel,
    load_model,
    read_model_info,
    save_model,
)
from napari_unet_cells.core.config import ModelConfig, NormalizationConfig, PredictConfig
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.interop import bioimageio as bio
from napari_unet_cells.core.predict import predict_probabilities_iter
from napari_unet_cells.core.progress import run
from napari_unet_cells.core.synthetic import synthetic_cells
from napari_unet_cells.core.unet import context_margin, min_input_size

pytestmark = pytest.mark.usefixtures("one_torch_thread")


_ATTEMPTS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Sockets refuse to connect or resolve, and every attempt is recorded (libraries may
    swallow the error, so ``attempts_fail`` checks the record after each test)."""

    def refuse(*args, **kwargs):
        _ATTEMPTS.append(repr(args[:2]))
        raise OSError("network access is disabled in this test")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        yield


@pytest.fixture(autouse=True)
def attempts_fail():
    _ATTEMPTS.clear()
    yield
    assert not _ATTEMPTS, f"network access attempted: {_ATTEMPTS}"


@pytest.fixture(scope="module")
def model():
    """A tiny trained-looking model: 3 classes, own normalisation and post-processing."""
    cell_model = CellModel.new(
        ModelConfig(base=4, depth=2, n_classes=3, dropout=0.0),
        seed=3,
        classes=("background", "cell", "boundary"),
        normalization=NormalizationConfig(p_low=2.0, p_high=99.5),
        provenance={"data": "synthetic test images", "history": [{"step": 3, "ap50": 0.5}]},
        extra={"instances": {"threshold": 0.45, "min_size": 12}, "diameter": 20.0},
    )
    return cell_model


@pytest.fixture(scope="module")
def package(model, tmp_path_factory) -> Path:
    """The model exported (without the slow bioimageio.core test: one test runs it)."""
    folder = tmp_path_factory.mktemp("export")
    path = bio.export_bioimageio(
        model, folder / "tiny_model.zip", authors=["Test Author"], test=False
    )
    return path


def _rdf(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


@pytest.mark.slow
def test_exported_package_passes_bioimageio_core_test(package):
    summary = bio.test_package(package)
    print(summary.format())
    assert summary.status == "passed", bio._summary_errors(summary)
    tested = {d.loc[-1] for d in summary.details if d.loc and d.loc[0] == "weights"}
    assert {"pytorch_state_dict", "torchscript"} <= tested


def test_reimport_gives_the_same_probabilities(model, package):
    again = load_model(package)
    assert again.config == model.config
    assert again.classes == model.classes
    assert again.normalization == model.normalization
    assert again.extra == model.extra
    assert again.provenance["data"] == model.provenance["data"]
    image, _ = synthetic_cells((70, 90), seed=5)
    config = PredictConfig(device="cpu")
    before = run(predict_probabilities_iter(image, model, config))
    after = run(predict_probabilities_iter(image, again, config))
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5)
    info = read_model_info(package)  # the header, without torch
    assert info["classes"] == list(model.classes)
    assert info["model_config"]["n_classes"] == 3


def test_package_declares_our_normalisation_and_tile_rule(model, package):
    descr = bio._load_package(package)  # bioimageio.spec's load_description, offline
    assert descr.validation_summary.status == "valid-format"
    (raw,) = descr.inputs
    (out,) = descr.outputs
    scale_range = next(p for p in raw.preprocessing if p.id == "scale_range")
    assert scale_range.kwargs.min_percentile == model.normalization.p_low
    assert scale_range.kwargs.max_percentile == model.normalization.p_high
    assert [str(a) for a in scale_range.kwargs.axes] == ["channel", "y", "x"]  # per plane
    assert not any(p.id == "clip" for p in raw.preprocessing)  # the model does not clip
    axes = {str(a.id): a for a in raw.axes}
    depth = model.config.depth
    for name in ("y", "x"):
        assert axes[name].size.min == min_input_size(depth)  # 44 for depth 2 (188 for 4)
        assert axes[name].size.step == 2**depth  # 4 for depth 2 (16 for 4)
        out_axis = next(a for a in out.axes if str(a.id) == name)
        assert out_axis.size.offset == -2 * context_margin(depth)  # 2 x 20 (2 x 92 for 4)
    channels = next(a for a in out.axes if a.type == "channel")
    assert channels.channel_names == list(model.classes)
    assert out.postprocessing[0].id == "softmax"
    arch = descr.weights.pytorch_state_dict.architecture
    assert arch.callable == "UNet2015" and arch.kwargs["depth"] == depth
    rdf = _rdf(package)
    assert rdf["config"]["napari_unet_cells"]["normalization"] == {
        "p_low": 2.0,
        "p_high": 99.5,
        "clip": False,
    }
    # the declared sizes are the network's: every min + n * step input gives input + offset
    net = model.net.eval()
    import torch

    for n in (0, 1, 5):
        size = axes["y"].size.get_size(n)
        with torch.no_grad():
            shape = net(torch.zeros(1, 1, size, size)).shape
        assert shape[-1] == size + out_axis.size.offset


def test_package_files_cite_and_document(package):
    rdf = _rdf(package)
    assert any("10.1007/978-3-319-24574-4_28" == c.get("doi") for c in rdf["cite"])
    assert [a["name"] for a in rdf["authors"]] == ["Test Author"]
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        card = archive.read(rdf["documentation"]["source"]).decode()
        test_input = np.load(archive.open("test_input.npy"))
        test_output = np.load(archive.open("test_output.npy"))
    assert {"unet2015.py", "weights.pt", "cover.png", "README.md"} <= names
    assert "## How to cite" in card and "Validation" in card and "Test Author" in card
    assert "nuclei of about 20 px" in card and "p(cell) + 0.5 p(boundary)" in card
    assert test_input.dtype == np.float32 and test_input.shape[:2] == (1, 1)
    assert test_output.shape[1] == 3  # one channel per class
    assert test_output.shape[-1] == test_input.shape[-1] - 2 * context_margin(2)
    np.testing.assert_allclose(test_output.sum(axis=1), 1, atol=1e-5)  # softmax


def test_standalone_architecture_equals_our_unet(model):
    import importlib.util

    import torch

    path = Path(bio.__file__).with_name(bio.ARCHITECTURE_FILE)
    spec = importlib.util.spec_from_file_location("unet2015_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from napari_unet_cells.core.config import config_to_dict

    other = module.UNet2015(**config_to_dict(model.config))
    other.load_state_dict(model.net.state_dict())
    x = torch.randn(2, 1, 52, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.net.eval()(x).numpy()  # (prediction may have made it channels-last)
        np.testing.assert_allclose(other.eval()(x).numpy(), ours, rtol=0, atol=1e-5)


def _foreign_package(path: Path, rdf: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("rdf.yaml", yaml.safe_dump(rdf))
        archive.writestr("weights.pt", b"not ours")
    return path


def test_foreign_package_gets_a_clear_message(tmp_path):
    rdf = {
        "type": "model",
        "format_version": "0.5.4",
        "name": "StarDist nuclei",
        "weights": {
            "tensorflow_saved_model_bundle": {"source": "tf.zip"},
            "pytorch_state_dict": {
                "source": "weights.pt",
                "architecture": {"callable": "StarDist2D", "source": "stardist.py"},
            },
        },
        "config": {"stardist": {"n_rays": 32}},
    }
    path = _foreign_package(tmp_path / "stardist.zip", rdf)
    for load in (load_model, read_model_info):
        with pytest.raises(UNetCellsError) as err:
            load(path)
        message = str(err.value)
        assert "StarDist nuclei" in message and "StarDist2D" in message
        assert "not a U-Net exported by napari-unet-cells" in message
    dataset = _foreign_package(tmp_path / "data.zip", {"type": "dataset", "name": "cells"})
    with pytest.raises(UNetCellsError, match=r"bioimage\.io dataset"):
        load_model(dataset)


def test_export_refuses_to_overwrite_and_bad_names(model, tmp_path):
    existing = tmp_path / "mine.zip"
    existing.write_bytes(b"precious")
    with pytest.raises(UNetCellsError, match=r"already exists.*--overwrite"):
        bio.export_bioimageio(model, existing)
    assert existing.read_bytes() == b"precious"
    with pytest.raises(UNetCellsError, match=r"\.zip"):
        bio.export_bioimageio(model, tmp_path / "model.npz")
    with pytest.raises(UNetCellsError, match="does not exist"):
        bio.export_bioimageio(model, tmp_path / "missing" / "m.zip")


def test_a_failed_bioimageio_test_writes_nothing(model, tmp_path, monkeypatch):
    class Failed:
        status = "failed"
        errors = ()

    monkeypatch.setattr(bio, "test_package", lambda path: Failed())
    target = tmp_path / "m.zip"
    with pytest.raises(UNetCellsError, match=r"failed bioimage\.io's model test"):
        bio.export_bioimageio(model, target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_export_from_a_model_file_and_reimport_from_folder(tmp_path, tiny_config):
    """A saved .npz exports too; an unzipped package (folder with rdf.yaml) loads."""
    source = save_model(CellModel.new(tiny_config, seed=1), tmp_path / "m.npz")
    package = bio.export_bioimageio(source, tmp_path / "m.zip", torchscript=False, test=False)
    assert bio.read_bioimageio_weights(package) == ["pytorch_state_dict"]
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(folder)
    again = load_model(folder)
    original = load_model(source)
    for key, value in original.net.state_dict().items():
        np.testing.assert_array_equal(again.net.state_dict()[key].numpy(), value.numpy())


def test_missing_interop_extra_says_how_to_install(model, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)  # import fails
    with pytest.raises(UNetCellsError, match=r"pip install 'napari-unet-cells\[interop\]'"):
        bio.export_bioimageio(model, tmp_path / "m.zip")


def test_json_header_matches_model_file_header(model, package, tmp_path):
    npz = save_model(model, tmp_path / "same.npz")
    ours = read_model_info(npz)
    theirs = read_model_info(package)
    for key in ("model_config", "normalization", "classes", "extra"):
        assert json.dumps(theirs[key], sort_keys=True) == json.dumps(ours[key], sort_keys=True)
