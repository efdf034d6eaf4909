"""bf16 autocast on CPUs with bf16 hardware: the policy, and that it keeps the cells.

The rest of the suite runs in fp32 on every machine (tests/conftest.py sets
NAPARI_UNET_CELLS_PRECISION=fp32); here bf16 is forced, so these tests run the bf16 path
on any CPU (torch emulates bf16 where the hardware lacks it: slower, same numbers).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet_cells.core import device as D
from napari_unet_cells.core.metrics import average_precision
from napari_unet_cells.core.predict import predict
from napari_unet_cells.core.registry import resolve_model
from napari_unet_cells.core.synthetic import synthetic_cells

CPU = torch.device("cpu")


@pytest.fixture
def bf16_cpu(monkeypatch):
    """This CPU counts as having bf16 hardware, precision left on "auto"."""
    monkeypatch.delenv(D.PRECISION_VARIABLE, raising=False)
    monkeypatch.setattr(D, "cpu_has_fast_bf16", lambda: True)


def test_policy_follows_the_hardware_and_the_variable(monkeypatch):
    monkeypatch.delenv(D.PRECISION_VARIABLE, raising=False)
    monkeypatch.setattr(D, "cpu_has_fast_bf16", lambda: False)
    assert D.inference_dtype(CPU) is None
    monkeypatch.setattr(D, "cpu_has_fast_bf16", lambda: True)
    assert D.inference_dtype(CPU) is torch.bfloat16
    monkeypatch.setenv(D.PRECISION_VARIABLE, " FP32 ")
    assert D.inference_dtype(CPU) is None
    monkeypatch.setenv(D.PRECISION_VARIABLE, "auto")
    assert D.inference_dtype(CPU) is torch.bfloat16


def test_hardware_probe_is_a_bool_even_without_torchs_probe(monkeypatch):
    assert isinstance(D.cpu_has_fast_bf16(), bool)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert D.cpu_has_fast_bf16() is False


def test_bf16_predicts_the_same_cells_as_fp32_and_stays_seamless(monkeypatch, bf16_cpu):
    model = resolve_model(None)  # the bundled model: realistic probabilities
    image, truth = synthetic_cells((256, 256), seed=3)
    labels, probs = predict(image, model, device="cpu", diameter=None, return_probabilities=True)
    tiled = predict(image, model, device="cpu", diameter=None, tile=220, return_probabilities=True)
    monkeypatch.setenv(D.PRECISION_VARIABLE, "fp32")
    labels32, probs32 = predict(
        image, model, device="cpu", diameter=None, return_probabilities=True
    )
    assert np.abs(probs - probs32).mean() < 0.01  # bf16 rounding, not other cells
    assert average_precision(labels32, labels, 0.5) >= 0.97
    ap_bf16 = average_precision(truth, labels, 0.5)
    assert abs(ap_bf16 - average_precision(truth, labels32, 0.5)) < 0.03
    assert np.abs(tiled[1] - probs).max() < 0.02  # tiles stitch without seams


def test_training_in_bf16_keeps_fp32_weights_and_a_finite_loss(bf16_cpu, tiny_config):
    from napari_unet_cells.core.checkpoint import CellModel
    from napari_unet_cells.core.config import TrainConfig
    from napari_unet_cells.core.data import as_samples
    from napari_unet_cells.core.progress import run
    from napari_unet_cells.core.train import train_iter

    image, labels = synthetic_cells((128, 128), seed=1)
    config = TrainConfig(steps=3, batch_size=2, patience=None, tune_post_processing=False)
    losses = []
    gen = train_iter(
        as_samples([image], [labels]), CellModel.new(tiny_config, seed=0), config, device="cpu"
    )
    result = run(gen, lambda event: losses.append(event.loss) if event.kind == "step" else None)
    assert result.steps == 3 and len(losses) == 3 and np.isfinite(losses).all()
    assert all(p.dtype == torch.float32 for p in result.model.net.parameters())


def test_reference_outputs_stay_fp32_on_a_bf16_cpu(bf16_cpu, tiny_config):
    """A bioimage.io package's test output is recomputed in fp32 by other tools: the
    export computes it with ``fp32=True`` whatever this CPU autocasts to."""
    from napari_unet_cells.core.checkpoint import CellModel
    from napari_unet_cells.core.interop.bioimageio_files import _test_output
    from napari_unet_cells.core.predictor import TorchPredictor

    model = CellModel.new(tiny_config, seed=0)
    raw = np.random.default_rng(0).random((1, 1, 92, 92)).astype(np.float32) * 1000
    exported = _test_output(model, model.net, raw)
    assert TorchPredictor(model.net, "cpu").dtype is torch.bfloat16
    assert TorchPredictor(model.net, "cpu", fp32=True).dtype is None
    with torch.inference_mode():
        from napari_unet_cells.core.normalize import normalize

        plane = normalize(raw[0].transpose(1, 2, 0), model.normalization).transpose(2, 0, 1)
        reference = torch.softmax(model.net.eval()(torch.from_numpy(plane[None])), 1).numpy()
    np.testing.assert_allclose(exported, reference, atol=1e-5)
