from __future__ import annotations

import pytest
import torch

from napari_unet_cells.core import device as D
from napari_unet_cells.core.errors import UNetCellsError


def test_available_devices_start_with_auto_and_cpu():
    names = D.available_devices()
    assert names[:2] == ["auto", "cpu"]
    assert all(D.resolve_device(n).type in ("cpu", "cuda", "mps") for n in names)


def test_resolve_cpu_and_auto():
    assert D.resolve_device("cpu") == torch.device("cpu")
    assert D.resolve_device(" CPU ") == torch.device("cpu")
    assert D.resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    assert D.resolve_device("auto").type == (expected or D.resolve_device("auto").type)
    if not torch.cuda.is_available():
        assert D.resolve_device(None).type in ("cpu", "mps")


def test_missing_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UNetCellsError, match=r"not available.*'auto'"):
        D.resolve_device("cuda")
    with pytest.raises(UNetCellsError, match="not available"):
        D.resolve_device("cuda:3")
    assert "cuda:0" not in D.available_devices()


def test_nonsense_device_is_a_clear_error():
    with pytest.raises(UNetCellsError, match="choose one of"):
        D.resolve_device("gpu please")


def test_precision_policy_on_cpu():
    cpu = torch.device("cpu")
    assert D.inference_dtype(cpu) is None
    with D.autocast(cpu, None):
        assert torch.ones(1).dtype == torch.float32
    D.release_memory(cpu)
