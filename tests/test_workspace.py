"""The workspace shared by the docks: headless (napari layers, no viewer, no Qt)."""

import gc

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.workspace import AnnotationLink, Workspace, workspace_for


def _layers(shape=(20, 30)):
    labels = np.zeros(shape, np.int32)
    labels[2:6, 2:6] = 1
    labels[2:6, 6:10] = 2  # two touching cells
    return Image(np.random.default_rng(0).random(shape), name="img"), Labels(labels, name="lab")


def test_training_set_events_and_flags():
    ws = Workspace()
    image, labels = _layers()
    link = ws.add_link(AnnotationLink(image, labels))
    heard = []
    ws.events.training_set.connect(lambda: heard.append(len(ws.pairs)))
    pair = ws.add_pair(image, labels)
    assert heard == [1] and link.in_training and ws.in_training(labels)
    ignore = Labels(np.zeros((20, 30), np.uint8), name="ignore")
    assert ws.add_pair(image, labels, ignore) is pair and pair.ignore is ignore  # no duplicate
    assert len(ws.pairs) == 1 and "ignore: ignore" in pair.describe()
    counts = ws.training_counts()
    assert counts["images"] == 1 and counts["cells"] == 2 and counts["touching_pairs"] == 1
    ws.forget_missing([image, labels])  # the ignore layer was deleted: the list hears it
    assert pair.ignore is None and len(heard) == 3 and "ignore" not in pair.describe()
    ws.remove_pair(0)
    assert heard[-1] == 0 and not link.in_training


def test_bad_pairs_are_refused_with_a_message():
    ws = Workspace()
    image, labels = _layers()
    with pytest.raises(UNetCellsError, match="an Image layer and a Labels layer"):
        ws.add_pair(labels, image)
    with pytest.raises(UNetCellsError, match="differ in shape"):
        ws.add_pair(image, Labels(np.zeros((5, 5), np.int32)))
    with pytest.raises(UNetCellsError, match="ignore layer"):
        ws.add_pair(image, labels, Labels(np.zeros((5, 5), np.uint8)))
    rgb = Image(np.zeros((20, 30, 3), np.uint8), rgb=True, name="colour")
    with pytest.raises(UNetCellsError, match="'colour' is RGB"):  # now, not when training
        ws.add_pair(rgb, labels)
    assert ws.pairs == []


def test_predictions_requests_and_forgetting_removed_layers():
    ws = Workspace()
    image, labels = _layers()
    prediction = Labels(labels.data.copy(), name="pred")
    seen, asked = [], []
    ws.events.prediction_added.connect(lambda i, p: seen.append((i, p)))
    ws.events.prediction_requested.connect(lambda i, m: asked.append((i, m)))
    ws.add_prediction(image, prediction)
    assert ws.prediction_of(image) is prediction and seen == [(image, prediction)]
    assert ws.request_prediction(image, "my model") is False  # nobody took it: it waits
    assert asked == [(image, "my model")]
    assert ws.take_prediction_request() == (image, "my model")
    assert ws.take_prediction_request() is None
    ws.events.prediction_requested.connect(lambda *_: ws.take_prediction_request())
    assert ws.request_prediction(image, "other") is True  # a Predict dock took it
    ws.add_pair(image, labels)
    ws.add_link(AnnotationLink(image, labels))
    ws.forget_missing([image, labels])  # the prediction layer was deleted
    assert ws.prediction_of(image) is None and len(ws.pairs) == 1
    ws.forget_missing([image])  # the labels too
    assert ws.pairs == [] and ws.links == []


def test_one_workspace_per_viewer_forgotten_with_it(make_napari_viewer):
    viewer = make_napari_viewer()
    ws = workspace_for(viewer)
    assert workspace_for(viewer) is ws
    image, labels = _layers()
    viewer.add_layer(image)
    viewer.add_layer(labels)
    ws.add_pair(image, labels)
    viewer.layers.remove(labels)  # deleting a layer drops it from the training set
    assert ws.pairs == []
    other = make_napari_viewer()
    assert workspace_for(other) is not ws
    gc.collect()
