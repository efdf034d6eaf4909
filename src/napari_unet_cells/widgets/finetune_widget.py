"""The "Fine-tune" dock: train a U-Net on annotated layers, live, with a Stop that works.

Thin: reads the training set (pairs of Image and Labels layers, optional ignore layer),
builds a :class:`TrainConfig`, runs :func:`core.train.train_iter` in a napari thread
worker and shows its events (progress, time left, a live plot of training loss and
validation AP50). When training ends or is stopped, the core saves the best model to
the chosen file, the dock registers it with the Predict dock of this session
(``core.registry.register_model``) and offers one click to run it on the current image.
"Preview augmentation" adds a few training tiles, exactly as the network sees them, as
new layers. Closing napari during training stops it and waits for the worker.

The user's layers are never modified: results are new layers.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..core.config import WEIGHT_MAP_PRESETS, TrainConfig, WeightMapConfig
from ..core.data import as_samples
from ..core.device import available_devices
from ..core.errors import UNetCellsError
from ..core.fileio import check_writable
from ..core.labels import mask_to_instances
from ..core.predict import (
    is_out_of_memory,
)
from ..core.registry import bundled_model_path, register_model, registered_models, resolve_model
from ..core.train import SCRATCH_CONFIG, TrainEvent, TrainResult, preview_augmentation, train_iter
from ._plot import LivePlot
from ._tips import tip
from ._window import compact_controls, scrolling_layout, short_dock_title

if TYPE_CHECKING:  # pragma: no cover
    import napari

logger = logging.getLogger(__name__)

_NONE = "(none)"
_SCRATCH = "from scratch (new network)"


@dataclass
class TrainingPair:
    """One entry of the training set: an image, its instance labels, optional ignore."""

    image: Image
    labels: Labels
    ignore: Labels | Image | None = None

    def describe(self) -> str:
        text = f"{self.image.name}  /  {self.labels.name}"
        return text + (f"  /  ignore: {self.ignore.name}" if self.ignore is not None else "")


def _layer_array(layer, what: str) -> np.ndarray:
    if getattr(layer, "multiscale", False):
        data = layer.data[0]
    else:
        data = layer.data
    if isinstance(layer, Image) and layer.rgb:
        raise UNetCellsError(
            f"{what} layer '{layer.name}' is RGB; training reads greyscale images: split "
            "the channels (right-click the layer) and add one channel."
        )
    return np.array(data, copy=True)  # a snapshot: painting during training changes nothing


def _warm_up_torch() -> None:
    """Pay torch's one-time lazy imports (the optimiser pulls in torch._dynamo and
    torch.distributed, ~1 s) in the background when the dock opens, not when Train is
    pressed: an import holds the GIL in long stretches and would pause the window."""
    try:
        p = torch.nn.Parameter(torch.zeros(1))
        torch.optim.AdamW([p]).step()
    except Exception:  # only a warm-up: training reports real problems itself
        logger.debug("torch warm-up failed", exc_info=True)


class _CloseWatcher(QObject):
    """Stops training when the napari main window closes."""

    def __init__(self, widget: FinetuneWidget):
        super().__init__(widget)
        self.widget = widget

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Close:
            self.widget.shutdown()
        return False


class FinetuneWidget(QWidget):
    """Dock widget "Fine-tune". ``worker``: the running training worker, or None.

    Other docks (e.g. Annotate) add to the same training set with ``add_pair``.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.pairs: list[TrainingPair] = []
        self.worker = None
        self.preview_worker = None
        self.result: TrainResult | None = None
        self.model_name: str | None = None
        self._stop = threading.Event()
        self._watching_close = False
        self._auto_output = False
        self._base_files: list[Path] = []

        layout = scrolling_layout(self)  # fits any window height
        short_dock_title(self, "Fine-tune")

        # -- training set -----------------------------------------------------------
        box = QGroupBox("Training set")
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.ignore_combo = QComboBox()
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Ignore", self.ignore_combo)
        buttons = QHBoxLayout()
        self.add_button = QPushButton("Add pair")
        self.remove_button = QPushButton("Remove selected")
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(80)
        box_layout = QVBoxLayout(box)
        box_layout.addLayout(form)
        box_layout.addLayout(buttons)
        box_layout.addWidget(self.pair_list)
        layout.addWidget(box)

        # -- settings ---------------------------------------------------------------
        settings = QFormLayout()
        self.base_combo = QComboBox()
        self.base_browse = QPushButton("File...")
        base_row = QHBoxLayout()
        base_row.addWidget(self.base_combo, 1)
        base_row.addWidget(self.base_browse)
        settings.addRow("Base model", base_row)
        self.budget = QSpinBox()
        self.budget.setRange(1, 1_000_000)
        self.budget.setValue(500)
        self.budget_unit = QComboBox()
        self.budget_unit.addItems(["steps", "minutes"])
        budget_row = QHBoxLayout()
        budget_row.addWidget(self.budget, 1)
        budget_row.addWidget(self.budget_unit)
        settings.addRow("Budget", budget_row)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(TrainConfig().peak_learning_rate)
        settings.addRow("Learning rate", self.lr)
        self.device = QComboBox()
        self.device.addItems(available_devices())
        settings.addRow("Device", self.device)
        self.output = QLineEdit()
        self.output.setPlaceholderText("default: models/ beside the image")
        self.output_browse = QPushButton("...")
        out_row = QHBoxLayout()
        out_row.addWidget(self.output, 1)
        out_row.addWidget(self.output_browse)
        settings.addRow("Save to", out_row)
        layout.addLayout(settings)

        # -- advanced (folded) --------------------------------------------------------
        self.advanced = QCollapsible("Advanced")
        adv = QWidget()
        adv_form = QFormLayout(adv)
        self.tile = QSpinBox()
        self.tile.setRange(0, 4096)
        self.tile.setSpecialValueText("auto")
        adv_form.addRow("Tile size", self.tile)
        self.batch = QSpinBox()
        self.batch.setRange(1, 256)
        self.batch.setValue(TrainConfig().batch_size)
        adv_form.addRow("Batch", self.batch)
        self.strength = QDoubleSpinBox()
        self.strength.setRange(0.0, 3.0)
        self.strength.setSingleStep(0.25)
        self.strength.setValue(1.0)
        adv_form.addRow("Augmentation", self.strength)
        self.preset = QComboBox()
        self.preset.addItems(list(WEIGHT_MAP_PRESETS))
        adv_form.addRow("Weight map", self.preset)
        self.optimizer = QComboBox()
        self.optimizer.addItems(["adam", "sgd"])
        adv_form.addRow("Optimiser", self.optimizer)
        self.validate_every = QSpinBox()
        self.validate_every.setRange(1, 100_000)
        self.validate_every.setValue(TrainConfig().validate_every)
        adv_form.addRow("Validate every", self.validate_every)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        adv_form.addRow("Seed", self.seed)
        self.advanced.addWidget(adv)
        layout.addWidget(self.advanced)

        # -- actions, progress, plot ---------------------------------------------------
        actions = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.preview_button = QPushButton("Preview augmentation")
        actions.addWidget(self.train_button)
        actions.addWidget(self.stop_button)
        layout.addLayout(actions)
        layout.addWidget(self.preview_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.plot = LivePlot()
        layout.addWidget(self.plot, 1)
        self.run_button = QPushButton("Run in Predict")
        self.run_button.setEnabled(False)
        self.export_button = QPushButton("Export...")
        self.export_button.setEnabled(False)
        self.save_as_button = QPushButton("Save as...")
        self.save_as_button.setEnabled(False)
        after = QHBoxLayout()
        after.addWidget(self.run_button, 1)
        after.addWidget(self.save_as_button)
        after.addWidget(self.export_button)
        layout.addLayout(after)

        self._set_tooltips()
        compact_controls(self)

        # -- wiring ----------------------------------------------------------------------
        # lambdas: clicked(bool) must not reach the methods' optional arguments
        self.add_button.clicked.connect(lambda: self._add_selected_pair())
        self.remove_button.clicked.connect(lambda: self._remove_selected_pair())
        self.base_browse.clicked.connect(lambda: self._browse_base())
        self.output_browse.clicked.connect(lambda: self._browse_output())
        self.optimizer.currentTextChanged.connect(self._optimizer_changed)
        self.train_button.clicked.connect(lambda: self.start_training())
        self.stop_button.clicked.connect(lambda: self.stop_training())
        self.preview_button.clicked.connect(lambda: self.preview_augmentation())
        self.run_button.clicked.connect(lambda: self.run_in_predict())
        self.export_button.clicked.connect(lambda: self.export_bioimageio())
        self.save_as_button.clicked.connect(lambda: self._guard(self.save_model_as))
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.reordered):
            emitter.connect(self._refresh_layers)
        self._refresh_layers()
        self._refresh_models()
        self.warmup_thread = threading.Thread(
            target=_warm_up_torch, name="unet-cells warm-up", daemon=True
        )
        self.warmup_thread.start()

    def _set_tooltips(self) -> None:
        tips = {
            self.image_combo: "Image layer of the next training pair: greyscale, 2-D or a "
            "stack of 2-D planes.",
            self.labels_combo: "Labels layer of the next training pair: the image's shape, "
            "0 = background, each cell its own number.",
            self.ignore_combo: "Optional: a layer marking pixels to leave out of training "
            "(nonzero = ignore), e.g. areas you did not annotate.",
            self.add_button: "Add the chosen image, labels and ignore layer to the training "
            "set. The Annotate dock's 'Add to training set' adds here too.",
            self.remove_button: "Remove the selected pair from the training set (the layers "
            "stay open).",
            self.pair_list: "The training set: image / labels / ignore mask. Select a pair to "
            "remove it.",
            self.base_combo: "The network training starts from: the bundled model (trained on "
            "synthetic nuclei; the usual choice), a new random network (needs many more "
            "steps), a model trained in this session, or a model file.",
            self.base_browse: "Start from a model file (.npz) saved by this plugin, or a "
            "bioimage.io package (.zip) it exported.",
            self.budget: "How long to train, in the unit on the right (default 500 steps). "
            "Stop ends training early and keeps the best model so far.",
            self.budget_unit: "steps: optimiser steps (one batch of tiles each); minutes: "
            "wall-clock time.",
            self.lr: "Peak learning rate (default 0.001 for adam, 0.01 for sgd; set when you "
            "change the optimiser). If the loss jumps up or becomes nan, lower it 3 to 10 "
            "times.",
            self.device: "Where training runs. auto: the first CUDA GPU, else Apple MPS, else "
            "the CPU. Only devices found on this computer are listed.",
            self.output: "Model file to write (.npz). Empty: a new file in a 'models' folder "
            "beside the first image (or in napari-unet-cells/models in your home folder). An "
            "existing file is replaced only after you confirm.",
            self.output_browse: "Choose the model file to write.",
            self.advanced.toggleButton(): "Show or hide the advanced settings: tile, batch, "
            "augmentation, weight map, optimiser, validation, seed.",
            self.tile: "Network input tile in pixels, 0 to 4096. auto (0): chosen from the "
            "network and the image size. Other values are snapped down to a size the network "
            "accepts (e.g. 572 px for the paper's depth-4 network).",
            self.batch: "Tiles per optimiser step (1 to 256; default 4). Lower it after an "
            "out-of-memory error.",
            self.strength: "Scales the elastic deformation (paper: random shifts of 10 px on a "
            "3x3 grid) and the intensity changes, 0 to 3 (default 1). 0: only flips and "
            "90-degree turns.",
            self.preset: "Loss weight map: paper (w0 = 10, sigma = 5 px) or fiji (w0 = 50, "
            "sigma = 6 px). The Weight Map dock shows what it looks like.",
            self.optimizer: "adam (default): fastest fine-tuning (warm-up, cosine decay). "
            "sgd: the paper's SGD with momentum 0.99.",
            self.validate_every: "Steps between validations on the held-out strip (20% of "
            "each image, at the end of its longer axis): AP50 is plotted and the best model is "
            "kept. Default 25; training stops early after 8 validations without improvement.",
            self.seed: "Random seed for the new network, tile sampling, augmentation and "
            "dropout: the same seed and data give the same model on the same device.",
            self.train_button: "Start training in the background; napari stays usable. "
            "Progress, time left, loss and validation AP50 show below.",
            self.stop_button: "Stop after the current step; the best model so far is saved "
            "and kept.",
            self.preview_button: "Add 4 augmented training tiles (image, labels, weight map) "
            "as layers, exactly as the network sees them.",
            self.run_button: "Open the Predict dock with the new model and run it on the "
            "selected image layer (or the first training image).",
            self.save_as_button: "Save the new model to another file, e.g. when its 'Save to' "
            "folder could not be written (the model stays available in Predict meanwhile).",
            self.export_button: "Export the new model as a bioimage.io package (.zip) for Fiji "
            "(deepImageJ), ilastik, QuPath or other napari plugins; it is tested before it is "
            "written. Needs: pip install 'napari-unet-cells[interop]'.",
        }
        for widget, text in tips.items():
            tip(widget, text)

    # -- layers and the training set -------------------------------------------------------

    def _refresh_layers(self, event=None) -> None:
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        labels = [layer for layer in self.viewer.layers if isinstance(layer, Labels)]
        for combo, layers, optional in (
            (self.image_combo, images, False),
            (self.labels_combo, labels, False),
            (self.ignore_combo, labels + images, True),
        ):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            if optional:
                combo.addItem(_NONE, None)
            for layer in layers:
                combo.addItem(layer.name, layer)
            index = combo.findData(current) if current is not None else -1
            if index >= 0:
                combo.setCurrentIndex(index)
            combo.blockSignals(False)
        alive = {id(layer) for layer in self.viewer.layers}
        kept = [
            p
            for p in self.pairs
            if id(p.image) in alive
            and id(p.labels) in alive
            and (p.ignore is None or id(p.ignore) in alive)
        ]
        if len(kept) != len(self.pairs):
            self.pairs = kept
            self._refresh_pair_list()

    def add_pair(
        self, image: Image, labels: Labels, ignore: Labels | Image | None = None
    ) -> TrainingPair:
        """Add (image, labels, ignore) to the training set; shapes are checked now."""
        if not isinstance(image, Image) or not isinstance(labels, Labels):
            raise UNetCellsError(
                "A training pair is an Image layer and a Labels layer: choose one of each."
            )
        shape = image.data.shape[:-1] if image.rgb else image.data.shape
        if tuple(shape) != tuple(labels.data.shape):
            raise UNetCellsError(
                f"'{image.name}' {tuple(shape)} and '{labels.name}' {labels.data.shape} differ "
                "in shape; labels must cover the image pixel for pixel."
            )
        if ignore is not None and tuple(ignore.data.shape) != tuple(labels.data.shape):
            raise UNetCellsError(
                f"The ignore layer '{ignore.name}' {tuple(ignore.data.shape)} and the labels "
                f"'{labels.name}' {tuple(labels.data.shape)} differ in shape; choose an ignore "
                "layer painted on the same image."
            )
        for p in self.pairs:
            if p.image is image and p.labels is labels:
                p.ignore = ignore
                self._refresh_pair_list()
                return p
        pair = TrainingPair(image, labels, ignore)
        self.pairs.append(pair)
        self._refresh_pair_list()
        return pair

    def remove_pair(self, index: int) -> None:
        del self.pairs[index]
        self._refresh_pair_list()

    def _refresh_pair_list(self) -> None:
        self.pair_list.clear()
        self.pair_list.addItems([p.describe() for p in self.pairs])

    def _add_selected_pair(self) -> None:
        image, labels = self.image_combo.currentData(), self.labels_combo.currentData()
        if image is None or labels is None:
            show_error("Choose an Image layer and a Labels layer to add.")
            return
        try:
            self.add_pair(image, labels, self.ignore_combo.currentData())
        except UNetCellsError as err:
            show_error(str(err))

    def _remove_selected_pair(self) -> None:
        row = self.pair_list.currentRow()
        if 0 <= row < len(self.pairs):
            self.remove_pair(row)

    # -- models ------------------------------------------------------------------------

    def _refresh_models(self) -> None:
        current = self.base_combo.currentData()
        self.base_combo.clear()
        bundled = bundled_model_path()
        if bundled is not None:
            self.base_combo.addItem(f"bundled ({bundled.name})", str(bundled))
        self.base_combo.addItem(_SCRATCH, "scratch")
        for name in registered_models():
            self.base_combo.addItem(f"this session: {name}", name)
        for path in self._base_files:
            self.base_combo.addItem(f"file: {path.name}", str(path))
        index = self.base_combo.findData(current) if current is not None else -1
        self.base_combo.setCurrentIndex(max(index, 0))

    def set_base_model(self, model: str | Path) -> None:
        """Start from a model file (or a model registered in this session by name)."""
        if str(model) not in registered_models() and str(model) != "scratch":
            path = Path(model)
            if path not in self._base_files:
                self._base_files.append(path)
            model = str(path)
        self._refresh_models()
        self.base_combo.setCurrentIndex(self.base_combo.findData(str(model)))

    def _browse_base(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Base model", "", "U-Net models (*.npz *.zip)")
        if name:
            self.set_base_model(name)

    def _browse_output(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Save model as", "", "U-Net models (*.npz)")
        if name:
            self.output.setText(name if name.endswith(".npz") else name + ".npz")

    def _optimizer_changed(self, name: str) -> None:
        self.lr.setValue(TrainConfig(optimizer=name).peak_learning_rate)

    # -- configuration ---------------------------------------------------------------------

    def train_config(self) -> TrainConfig:
        """The TrainConfig the current settings describe."""
        steps = minutes = None
        if self.budget_unit.currentText() == "steps":
            steps = self.budget.value()
        else:
            minutes = float(self.budget.value())
        return TrainConfig(
            steps=steps,
            minutes=minutes,
            batch_size=self.batch.value(),
            tile=self.tile.value() or None,
            optimizer=self.optimizer.currentText(),
            learning_rate=self.lr.value(),
            validate_every=self.validate_every.value(),
            augment_strength=self.strength.value(),
            weight_map=WeightMapConfig.preset(self.preset.currentText()),
            seed=self.seed.value(),
        )

    def output_path(self) -> Path:
        """The chosen file, or a new file in a "models" folder beside the first image."""
        text = self.output.text().strip()
        if text:
            return Path(text).expanduser()
        folder = None
        if self.pairs:
            source = getattr(self.pairs[0].image.source, "path", None)
            if source:
                folder = Path(source).parent / "models"
        if folder is None:
            folder = Path.home() / "napari-unet-cells" / "models"
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        stem = self.pairs[0].labels.name if self.pairs else "model"
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
        path = folder / f"{stem}_unet_{stamp}.npz"
        counter = 1
        while path.exists():
            path = folder / f"{stem}_unet_{stamp}_{counter}.npz"
            counter += 1
        return path

    def _samples(self):
        if not self.pairs:
            raise UNetCellsError(
                "The training set is empty: choose an Image and a Labels layer and click "
                "'Add pair'."
            )
        labels = []
        for pair in self.pairs:  # 0/1 or 0/255 masks: numbered, with a notice
            array, notice = mask_to_instances(
                _layer_array(pair.labels, "Labels"), f"'{pair.labels.name}'"
            )
            if notice:
                show_info(notice)
            labels.append(array)
        return as_samples(
            [_layer_array(p.image, "Image") for p in self.pairs],
            labels,
            [None if p.ignore is None else _layer_array(p.ignore, "Ignore") for p in self.pairs],
            names=[p.image.name for p in self.pairs],
        )

    # -- training ------------------------------------------------------------------------

    def start_training(self) -> Any:
        """Start training in a thread worker; returns the worker (None on a user error)."""
        if self.worker is not None:
            show_info("Training is already running.")
            return None
        try:
            samples = self._samples()
            config = self.train_config()
            self._auto_output = not self.output.text().strip()
            path = self.output_path()
            check_writable(path, "the model")  # now, not after the training run
            overwrite = False
            if path.exists():
                answer = QMessageBox.question(
                    self, "Overwrite?", f"{path} exists. Replace it with the new model?"
                )
                if answer != QMessageBox.StandardButton.Yes:
                    return None
                overwrite = True
            gen = train_iter(
                samples,
                self.base_combo.currentData(),
                config,
                device=self.device.currentText(),
                stop=self._stop,
                save_to=path,
                overwrite=overwrite,
            )
        except UNetCellsError as err:
            show_error(str(err))
            return None
        self._watch_close()
        self._stop.clear()
        self.result = None
        self.output.setText(str(path))
        self.plot.clear(config.steps)
        self.progress.setValue(0)
        self.status.setText("preparing the training data ...")
        self.train_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.run_button.setEnabled(False)
        self.export_button.setEnabled(False)

        def run():
            return (yield from gen)

        worker = create_worker(run, _start_thread=False)
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        return worker

    def stop_training(self) -> None:
        """Ask training to stop after the current step; the best model is kept and saved."""
        if self.worker is not None:
            self._stop.set()
            self.stop_button.setEnabled(False)
            self.status.setText(
                "stopping after the current step: the best model validated so far is kept "
                "and saved ..."
            )

    def _on_event(self, event: TrainEvent) -> None:
        self.progress.setValue(int(1000 * event.progress))
        if event.kind in ("start", "tuning"):
            self.status.setText(event.message)
            return
        if event.kind == "step" and event.loss is not None:
            self.plot.add_loss(event.step, event.loss)
        if event.kind == "validation" and event.metrics:
            self.plot.add_ap(event.step, event.metrics["ap50"])
        if event.kind == "done":
            self.progress.setValue(1000)
            self.status.setText(event.message)
            return
        total = f"/{event.total_steps}" if event.total_steps else ""
        parts = [f"step {event.step}{total}"]
        if event.loss is not None:
            parts.append(f"loss {event.loss:.4f}")
        if event.best_metrics:
            parts.append(f"best AP50 {event.best_metrics['ap50']:.3f}")
        if event.eta_s is not None:
            parts.append(f"{int(event.eta_s) // 60} min {int(event.eta_s) % 60:02d} s left")
        self.status.setText("  ·  ".join(parts))

    def _on_result(self, result: TrainResult | None) -> None:
        if result is None:
            return
        if not result.trained:  # the start model, unchanged: never offered as fine-tuned
            show_info(
                f"Fine-tuning made no training step ({result.stopped_by.replace('_', ' ')} "
                "before the first step): no new model, nothing saved. Give a larger budget."
            )
            return
        self.result = result
        stamp = time.strftime("%H:%M:%S")
        name = result.saved_to.stem if result.saved_to is not None else f"fine-tuned {stamp}"
        self.model_name = name
        register_model(name, result.model)  # usable in Predict even if saving failed
        self._refresh_models()
        for button in (self.run_button, self.export_button, self.save_as_button):
            button.setEnabled(True)
        ap = result.best_metrics["ap50"] if result.best_metrics else None  # its settings'
        text = (
            f"Fine-tuning done ({result.stopped_by.replace('_', ' ')}): "
            + (f"validation AP50 {ap:.3f}; " if ap is not None else "")
            + "{saved}; available in Predict as "
            f"'{name}' (choosing it sets Predict's sliders to its post-processing)."
        )
        if result.save_error is None:
            show_info(text.format(saved=f"saved to {result.saved_to}"))
            return
        show_error(
            text.format(
                saved=f"NOT SAVED ({result.save_error}): click 'Save as...' to save it elsewhere"
            )
        )

    def save_model_as(self, path: str | Path | None = None) -> Path | None:
        """Save the last trained model to ``path`` (default: ask with a file dialog)."""
        from ..core.checkpoint import save_model

        if self.result is None:
            raise UNetCellsError("Train a model first.")
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save model", "", "Model (*.npz)")
            if not path:
                return None
        path = Path(path).expanduser()
        check_writable(path, "the model")
        try:
            self.result.saved_to = save_model(self.result.model, path)
        except OSError as err:
            raise UNetCellsError(
                f"Cannot save the model to {path} ({err.strerror}); choose another folder."
            ) from None
        self.result.save_error = None
        self.status.setText(f"saved to {path}")
        return path

    def _guard(self, fn, *args, **kwargs) -> Any:
        try:
            return fn(*args, **kwargs)
        except UNetCellsError as err:
            show_error(str(err))
            return None

    def _on_error(self, err: Exception) -> None:
        if isinstance(err, UNetCellsError):
            show_error(str(err))
        else:
            logger.exception("training failed", exc_info=err)
            if is_out_of_memory(err):
                show_error(
                    "Training ran out of memory: lower 'Batch' or 'Tile size' under "
                    f"Advanced, or choose Device 'cpu', then train again. ({err})"
                )
            else:
                show_error(f"Training failed: {err}")
        self.status.setText(f"failed: {err}")

    def _on_finished(self) -> None:
        self.worker = None
        if self._auto_output:  # the next run gets a new default file, not this one
            self.output.clear()
        self.train_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    # -- preview ---------------------------------------------------------------------------

    def preview_augmentation(self, n: int = 4) -> Any:
        """Add n augmented training tiles (image, labels, weight map) as new layers."""
        try:
            samples = self._samples()
            config = self.train_config()
            base = self.base_combo.currentData()
            model_config = SCRATCH_CONFIG if base == "scratch" else resolve_model(base).config
        except UNetCellsError as err:
            show_error(str(err))
            return None
        worker = create_worker(
            preview_augmentation,
            samples,
            config,
            model_config,
            n,
            int(time.time()) % 100_000,
            _start_thread=False,
        )
        worker.returned.connect(self._show_preview)
        worker.errored.connect(self._on_error)
        self.preview_worker = worker
        worker.start()
        return worker

    def _show_preview(self, tiles: dict[str, np.ndarray]) -> None:
        names = {
            "image": "augmentation preview: image",
            "labels": "augmentation preview: labels",
            "weight": "augmentation preview: weight map",
        }
        for key, name in names.items():
            if name in self.viewer.layers:  # a layer this dock created earlier
                self.viewer.layers[name].data = tiles[key]
            elif key == "labels":
                self.viewer.add_labels(tiles[key], name=name, opacity=0.4)
            elif key == "weight":
                self.viewer.add_image(
                    tiles[key], name=name, colormap="inferno", blending="additive", visible=False
                )
            else:
                self.viewer.add_image(tiles[key], name=name, colormap="gray")
        self.viewer.dims.set_current_step(0, 0)

    # -- prediction ------------------------------------------------------------------------

    def run_in_predict(self) -> Any:
        """Open the Predict dock with the new model selected and run it on the current image.

        Returns the Predict dock widget (its ``worker`` is the running prediction).
        """
        if self.model_name is None:
            show_error("Train a model first.")
            return None
        image = self.viewer.layers.selection.active
        if not isinstance(image, Image):
            image = self.pairs[0].image if self.pairs else None
        if image is None:
            show_error("Select an image layer to run the model on.")
            return None
        _, widget = self.viewer.window.add_plugin_dock_widget("napari-unet-cells", "Predict")
        widget.refresh_models()
        widget.image_combo.reset_choices()
        widget.model_combo.value = self.model_name
        widget.image_combo.value = image
        widget.run()
        return widget

    def export_bioimageio(self, path: str | Path | None = None) -> Any:
        """Export the new model as a bioimage.io package (``core.interop.bioimageio``) in
        the background; asks for the file name when ``path`` is None. Returns the worker."""
        from ..core.interop.bioimageio import export_bioimageio

        if self.result is None:
            show_error("Train a model first.")
            return None
        if path is None:  # the dialog has the user confirm replacing an existing file
            path, _ = QFileDialog.getSaveFileName(self, "Export", "", "bioimage.io (*.zip)")
            if not path:
                return None
        path = Path(path) if Path(path).suffix == ".zip" else Path(f"{path}.zip")
        worker = create_worker(
            export_bioimageio, self.result.model, path, overwrite=True, _start_thread=False
        )
        worker.returned.connect(lambda p: show_info(f"Exported the model to {p} (tested)."))
        worker.errored.connect(lambda err: show_error(str(err)))
        self.export_worker = worker
        worker.start()
        return worker

    # -- closing ---------------------------------------------------------------------------

    def _watch_close(self) -> None:
        if self._watching_close:
            return
        window = self.window()
        if window is not None and window is not self:
            window.installEventFilter(_CloseWatcher(self))
            self._watching_close = True

    def shutdown(self, timeout_s: float = 120.0) -> None:
        """Stop training and wait (up to ``timeout_s``) for the worker to end."""
        worker = self.worker
        if worker is None:
            return
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        while worker.is_running and time.monotonic() < deadline:
            time.sleep(0.02)
        logger.info("training stopped because napari is closing")
