"""The Fine-tune dock's Export... button: after training, one click writes a package."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("bioimageio.core", reason="needs the interop extra")

from napari_unet_cells.core.checkpoint import CellModel, load_model
from napari_unet_cells.core.interop import bioimageio as bio
from napari_unet_cells.core.registry import unregister_model


def test_export_button_after_training(
    make_napari_viewer, qtbot, tmp_path, tiny_config, monkeypatch
):
    real = bio.export_bioimageio
    calls = []

    def quick_export(model, path, **kwargs):  # bioimageio.core's test runs in tests/core
        calls.append(kwargs)
        return real(model, path, **kwargs, torchscript=False, test=False)

    monkeypatch.setattr(bio, "export_bioimageio", quick_export)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Fine-tune")
    assert not widget.export_button.isEnabled()
    model = CellModel.new(tiny_config, seed=0)
    result = SimpleNamespace(
        model=model,
        saved_to=tmp_path / "tuned.npz",
        best_metrics={"ap50": 0.5},
        stopped_by="steps",
        ended="the step budget was used",
        trained=True,
        save_error=None,
    )
    widget._on_result(result)  # what a finished training run calls
    assert widget.export_button.isEnabled() and widget.export_button.toolTip()
    worker = widget.export_bioimageio(tmp_path / "shared_model")
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    package = tmp_path / "shared_model.zip"
    assert package.is_file() and calls == [{"overwrite": True}]
    assert load_model(package).config == model.config
    unregister_model("tuned")
