"""The training settings: budget, learning rate, device, and the folded "Advanced" ones.

:meth:`SettingsPanel.train_config` turns them into the :class:`TrainConfig` the core
trains with; nothing else reads the controls.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ...core.config import WEIGHT_MAP_PRESETS, TrainConfig, WeightMapConfig
from ...core.device import available_devices
from .._tips import tip

_TIPS = {
    "budget": "How long to train, in the unit on the right (default 500 steps). Stop ends "
    "training early and keeps the model (the best so far, or the averaged weights when the "
    "validation strip has fewer than 100 cells).",
    "budget_unit": "steps: optimiser steps (one batch of tiles each); minutes: wall-clock time.",
    "lr": "Peak learning rate (default 0.001 for adam, 0.01 for sgd; set when you change the "
    "optimiser). If the loss jumps up or becomes nan, lower it 3 to 10 times.",
    "device": "Where training runs. auto: the first CUDA GPU, else Apple MPS, else the CPU. "
    "Only devices found on this computer are listed.",
    "tile": "Network input tile in pixels, 0 to 4096. auto (0): chosen from the network and "
    "the image size. Other values are snapped down to a size the network accepts (e.g. 572 "
    "px for the paper's depth-4 network).",
    "batch": "Tiles per optimiser step (1 to 256; default 4). Lower it after an out-of-memory "
    "error.",
    "strength": "Scales the elastic deformation (paper: random shifts of 10 px on a 3x3 grid) "
    "and the intensity changes, 0 to 3 (default 1). 0: only flips and 90-degree turns.",
    "preset": "Loss weight map: paper (w0 = 10, sigma = 5 px) or fiji (w0 = 50, sigma = 6 "
    "px). The Weight Map dock shows what it looks like.",
    "optimizer": "adam (default): fastest fine-tuning (warm-up, cosine decay). sgd: the "
    "paper's SGD with momentum 0.99.",
    "validate_every": "Steps between validations on the held-out strip (20% of each image, "
    "at the end of its longer axis): AP50 is plotted. Default 25. With 100 or more validation "
    "cells the best model is kept and training stops early after 8 validations without "
    "improvement; with fewer, the weights averaged over the last half of the budget are kept.",
    "seed": "Random seed for the new network, tile sampling, augmentation and dropout: the "
    "same seed and data give the same model on the same device.",
}


def _spin(low: int, high: int, value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    return spin


def _double(low: float, high: float, step: float, value: float, decimals: int = 2):
    spin = QDoubleSpinBox()
    spin.setDecimals(decimals)
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setValue(value)
    return spin


class SettingsPanel(QWidget):
    """Budget, learning rate and device, then the folded advanced settings."""

    def __init__(self) -> None:
        super().__init__()
        defaults = TrainConfig()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        form = QFormLayout()
        self.budget = _spin(1, 1_000_000, 500)
        self.budget_unit = QComboBox()
        self.budget_unit.addItems(["steps", "minutes"])
        budget_row = QHBoxLayout()
        budget_row.addWidget(self.budget, 1)
        budget_row.addWidget(self.budget_unit)
        form.addRow("Budget", budget_row)
        self.lr = _double(1e-5, 1.0, 1e-4, defaults.peak_learning_rate, decimals=5)
        form.addRow("Learning rate", self.lr)
        self.device = QComboBox()
        self.device.addItems(available_devices())
        form.addRow("Device", self.device)
        layout.addLayout(form)
        self.advanced = self._advanced(defaults)
        layout.addWidget(self.advanced)
        for name, text in _TIPS.items():
            tip(getattr(self, name), text)
        tip(
            self.advanced.toggleButton(),
            "Show or hide the advanced settings: tile, batch, augmentation, weight map, "
            "optimiser, validation, seed.",
        )
        self.optimizer.currentTextChanged.connect(self._optimizer_changed)

    def _advanced(self, defaults: TrainConfig) -> QCollapsible:
        advanced = QCollapsible("Advanced")
        inner = QWidget()
        form = QFormLayout(inner)
        self.tile = _spin(0, 4096, 0)
        self.tile.setSpecialValueText("auto")
        form.addRow("Tile size", self.tile)
        self.batch = _spin(1, 256, defaults.batch_size)
        form.addRow("Batch", self.batch)
        self.strength = _double(0.0, 3.0, 0.25, 1.0)
        form.addRow("Augmentation", self.strength)
        self.preset = QComboBox()
        self.preset.addItems(list(WEIGHT_MAP_PRESETS))
        form.addRow("Weight map", self.preset)
        self.optimizer = QComboBox()
        self.optimizer.addItems(["adam", "sgd"])
        form.addRow("Optimiser", self.optimizer)
        self.validate_every = _spin(1, 100_000, defaults.validate_every)
        form.addRow("Validate every", self.validate_every)
        self.seed = _spin(0, 2**31 - 1, 0)
        form.addRow("Seed", self.seed)
        advanced.addWidget(inner)
        return advanced

    def _optimizer_changed(self, name: str) -> None:
        self.lr.setValue(TrainConfig(optimizer=name).peak_learning_rate)

    def train_config(self) -> TrainConfig:
        """The :class:`TrainConfig` the controls describe (budget in steps or minutes)."""
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
