"""The "Base model" and "Save to" rows: what training starts from and where it goes.

The base-model list offers the bundled model, a new network, the models registered in
this session (``core.registry``; the list follows ``registry.events.changed``) and model
files the user chose.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)
from superqt.utils import ensure_main_thread

from ...core import registry
from .._tips import tip
from .._window import connect_while_alive

SCRATCH = "from scratch (new network)"

_TIPS = {
    "base_combo": "The network training starts from: the bundled model (trained on "
    "synthetic nuclei; the usual choice), a new random network (needs many more steps), a "
    "model trained in this session, or a model file.",
    "base_browse": "Start from a model file (.npz) saved by this plugin, or a bioimage.io "
    "package (.zip) it exported.",
    "output": "Model file to write (.npz). Empty: a new file in a 'models' folder beside the "
    "first image (or in napari-unet-cells/models in your home folder). An existing file is "
    "replaced only after you confirm.",
    "output_browse": "Choose the model file to write.",
}


class ModelPanel(QWidget):
    """Base model (``base_combo``: data is a file path, a session model's name or
    "scratch") and the model file to write (``output``; empty = a default file)."""

    def __init__(self) -> None:
        super().__init__()
        self._files: list[Path] = []
        self.base_combo = QComboBox()
        self.base_browse = QPushButton("File...")
        self.output = QLineEdit()
        self.output.setPlaceholderText("default: models/ beside the image")
        self.output_browse = QPushButton("...")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Base model", _row(self.base_combo, self.base_browse))
        form.addRow("Save to", _row(self.output, self.output_browse))
        for name, text in _TIPS.items():
            tip(getattr(self, name), text)
        self.base_browse.clicked.connect(lambda: self._browse_base())
        self.output_browse.clicked.connect(lambda: self._browse_output())
        # register_model may be called from any thread: the list is redrawn on the GUI's
        self._refresh_on_gui = ensure_main_thread(self.refresh_models)
        connect_while_alive(self, registry.events.changed, self._refresh_on_gui)
        self.refresh_models()

    def base_model(self) -> str | None:
        """The chosen start: a file path, a session model's name, or "scratch"."""
        return self.base_combo.currentData()

    def refresh_models(self) -> None:
        """Rebuild the base-model list, keeping the current choice when it still exists."""
        current = self.base_combo.currentData()
        self.base_combo.clear()
        bundled = registry.bundled_model_path()
        if bundled is not None:
            self.base_combo.addItem(f"bundled ({bundled.name})", str(bundled))
        self.base_combo.addItem(SCRATCH, "scratch")
        for name in registry.registered_models():
            self.base_combo.addItem(f"this session: {name}", name)
        for path in self._files:
            self.base_combo.addItem(f"file: {path.name}", str(path))
        index = self.base_combo.findData(current) if current is not None else -1
        self.base_combo.setCurrentIndex(max(index, 0))

    def set_base_model(self, model: str | Path) -> None:
        """Start from a model file, a model registered in this session (by name) or
        "scratch"."""
        if str(model) not in registry.registered_models() and str(model) != "scratch":
            path = Path(model)
            if path not in self._files:
                self._files.append(path)
            model = str(path)
        self.refresh_models()
        self.base_combo.setCurrentIndex(self.base_combo.findData(str(model)))

    def _browse_base(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Base model", "", "U-Net models (*.npz *.zip)")
        if name:
            self.set_base_model(name)

    def _browse_output(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Save model as", "", "U-Net models (*.npz)")
        if name:
            self.output.setText(name if name.endswith(".npz") else name + ".npz")


def _row(main: QWidget, button: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(main, 1)
    row.addWidget(button)
    return row
