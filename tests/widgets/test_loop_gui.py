"""The whole human-in-the-loop cycle in a real viewer, through the docks: Predict with a
weak model, correct in Annotate, Add to training set, train in Fine-tune, Predict again;
the second prediction matches the corrections better (object AP50 rises)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet_cells.core import annotation as A
from napari_unet_cells.core.config import ModelConfig, TrainConfig
from napari_unet_cells.core.metrics import average_precision
from napari_unet_cells.core.registry import register_model, unregister_model
from napari_unet_cells.core.synthetic import synthetic_cells
from napari_unet_cells.core.train import finetune
from napari_unet_cells.widgets.annotate_widget import select


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks run fastest on one thread (see tests/widgets/test_finetune_widget.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _predict(viewer, qtbot, image_layer, model_name):
    _, predict = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Predict")
    predict.refresh_models()
    predict.image_combo.reset_choices()
    predict.model_combo.value = model_name
    predict.image_combo.value = image_layer
    predict.device.value = "cpu"
    predict.run()
    assert predict.worker is not None
    qtbot.waitUntil(lambda: predict.worker is None, timeout=60_000)  # a fast run may end first
    return predict.labels_layer


@pytest.mark.slow
def test_loop_in_the_viewer(make_napari_viewer, qtbot, tmp_path):
    image, truth = synthetic_cells((128, 128), seed=1)
    tiny = ModelConfig(base=4, depth=2, dropout=0.0)
    weak = finetune(
        image,
        truth,
        model=tiny,
        config=TrainConfig(steps=2, batch_size=2, validate_every=10_000, warmup_steps=1),
    )
    register_model("weak", weak)
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(image, name="cells")

    # 1. predict with the weak model
    predicted = _predict(viewer, qtbot, image_layer, "weak")
    first = np.array(predicted.data, copy=True)

    # 2. correct a copy of the prediction in the Annotate dock, as a user would
    _, annotate = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Annotate")
    annotate.set_project(tmp_path / "project")
    select(annotate.image_combo, image_layer)
    select(annotate.prediction_combo, predicted)
    layer = annotate.new_annotation(from_prediction=True)
    for wrong in np.unique(first)[1:]:
        annotate.delete(int(wrong))
    half = truth.shape[1] // 2
    for region in (np.s_[:, :half], np.s_[:, half:]):  # region by region, cell by cell
        for cell in np.unique(truth[region])[1:]:
            if (layer.data == 0)[truth == cell].all():
                label = annotate.new_cell()  # "New cell", then paint it (one undo step)
                layer.data_setitem(np.nonzero(truth == cell), label)
    annotation = np.array(layer.data, copy=True)
    assert (predicted.data == first).all()  # the prediction layer was not touched
    report = annotate.check()
    assert not report.count("split_id") and report.n_touching_pairs > 0

    # 3. add to the training set shared with the Fine-tune dock, 4. fine-tune
    pair = annotate.add_to_training_set()
    _, finetune_dock = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Fine-tune")
    assert finetune_dock.pairs == [pair]
    finetune_dock.set_base_model("weak")
    finetune_dock.budget.setValue(300)
    finetune_dock.batch.setValue(2)
    finetune_dock.validate_every.setValue(10_000)
    finetune_dock.device.setCurrentText("cpu")
    finetune_dock.output.setText(str(tmp_path / "tuned.npz"))
    worker = finetune_dock.start_training()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert finetune_dock.result is not None and finetune_dock.model_name == "tuned"

    # 5. predict again with the fine-tuned model
    second = np.array(_predict(viewer, qtbot, image_layer, "tuned").data, copy=True)
    ap_first = average_precision(annotation, first)
    ap_second = average_precision(annotation, second)
    print(f"AP50 against the corrections: {ap_first:.3f} -> {ap_second:.3f}")
    assert ap_second >= ap_first + 0.1

    # the annotation and the training-set list were saved along the way
    qtbot.waitUntil(lambda: not annotate.autosave_timer.isActive(), timeout=5_000)
    project = A.AnnotationProject(tmp_path / "project", create=False)
    (key,) = project.training_keys()
    assert (project.load(key)["labels"] == annotation).all()
    unregister_model("weak")
    unregister_model("tuned")
