"""The panels the Fine-tune dock (``widgets/finetune_widget.py``) is assembled from.

Each panel is a small Qt widget that owns its controls and tooltips and reads the
shared state it shows: the training set from the viewer's workspace
(:mod:`napari_unet_cells.workspace`), the session's models from
:mod:`napari_unet_cells.core.registry`. The dock wires them to the training run.
"""

from .model_panel import ModelPanel
from .progress import ProgressPanel
from .results import ResultsPanel
from .settings import SettingsPanel
from .training_set import TrainingSetPanel

__all__ = ["ModelPanel", "ProgressPanel", "ResultsPanel", "SettingsPanel", "TrainingSetPanel"]
