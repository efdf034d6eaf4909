"""The human-in-the-loop cycle through the API (for scripts): predict with a weak model,
correct the labels, check them, save them, fine-tune, predict again: object AP rises."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet_cells.core import annotation as A
from napari_unet_cells.core.config import TrainConfig
from napari_unet_cells.core.metrics import average_precision
from napari_unet_cells.core.predict import predict
from napari_unet_cells.core.synthetic import synthetic_cells
from napari_unet_cells.core.train import finetune

# measured (seed 1, 128 px, tiny net): AP50 0.0 after 2 steps, ~0.22 after 200 more
LOOP_STEPS = 200


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks run fastest on one thread (see tests/core/test_train.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def loop_config(steps: int) -> TrainConfig:
    return TrainConfig(
        steps=steps, batch_size=2, validate_every=10_000, warmup_steps=5, patience=None, seed=0
    )


def correct_like_a_user(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Start from a copy of the prediction, delete the wrong objects, paint each missing
    cell with a new id (the "New cell" workflow)."""
    annotation = prediction.astype(np.int32, copy=True)
    for wrong in np.unique(prediction)[1:]:
        A.apply_edit(annotation, A.delete_label(annotation, int(wrong)))
    for cell in np.unique(truth)[1:]:
        A.apply_edit(annotation, A.paint_label(annotation, truth == cell))
    return annotation


@pytest.mark.slow
def test_loop_headless(tiny_config, tmp_path):
    image, truth = synthetic_cells((128, 128), seed=1)
    weak = finetune(image, truth, model=tiny_config, config=loop_config(2))
    first = predict(image, weak, device="cpu")

    annotation = correct_like_a_user(first, truth)
    report = A.check_annotation(annotation, min_size=10, prediction=first)
    assert not report.count("split_id") and not report.count("speck")
    assert report.n_touching_pairs > 0

    project = A.AnnotationProject(tmp_path / "project")
    entry = project.save(
        A.image_identity("cells", image), annotation, image=image, in_training=True
    )
    reopened = A.AnnotationProject(tmp_path / "project", create=False)
    assert reopened.training_keys() == [entry.key]
    saved = reopened.load(entry.key)

    tuned = finetune(saved["image"], saved["labels"], model=weak, config=loop_config(LOOP_STEPS))
    second = predict(image, tuned, device="cpu")
    ap_first = average_precision(annotation, first)
    ap_second = average_precision(annotation, second)
    print(f"AP50 against the corrections: {ap_first:.3f} -> {ap_second:.3f}")
    assert ap_second >= ap_first + 0.1
