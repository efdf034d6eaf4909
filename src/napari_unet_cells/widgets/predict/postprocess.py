"""The Predict dock's post-processing controls: probabilities -> cells, no inference."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from magicgui.widgets import FloatSlider, SpinBox

from ...core.config import InstanceConfig
from ...core.model_info import seed_threshold_from_control, seed_threshold_to_control
from .._tips import tip


class PostProcessPanel:
    """Threshold, Seed threshold, Min size and Min confidence (``InstanceConfig``)."""

    def __init__(self) -> None:
        defaults = InstanceConfig()
        self.threshold = FloatSlider(
            label="Threshold", min=0.01, max=0.99, step=0.01, value=defaults.threshold
        )
        self.seed_threshold = FloatSlider(label="Seed threshold", min=0.0, max=0.99, step=0.01)
        self.min_size = SpinBox(label="Min size (px)", min=0, max=100000, value=defaults.min_size)
        self.min_confidence = FloatSlider(
            label="Min confidence", min=0.0, max=0.99, step=0.01, value=defaults.min_confidence
        )
        for widget, text in _tips(self):
            tip(widget, text)

    @property
    def widgets(self) -> list[Any]:
        """The controls, in the order the dock shows them."""
        return [self.threshold, self.seed_threshold, self.min_size, self.min_confidence]

    def connect(self, callback) -> None:
        """Call ``callback(value)`` whenever one of the controls changes."""
        for widget in self.widgets:
            widget.changed.connect(callback)

    def show(self, config: InstanceConfig) -> None:
        """Set the controls to ``config`` (a model's recommendation), quietly: the labels
        shown are not re-made from another model's probabilities."""
        with contextlib.ExitStack() as quiet:
            for widget in self.widgets:
                quiet.enter_context(widget.changed.blocked())
            self.threshold.value = config.threshold
            self.seed_threshold.value = seed_threshold_to_control(config.seed_threshold)
            self.min_size.value = config.min_size
            self.min_confidence.value = config.min_confidence

    def config(self, defaults: InstanceConfig) -> InstanceConfig:
        """``defaults`` with the controls' values (Seed threshold 0: no seeds).

        Raises UNetCellsError for an invalid combination (``InstanceConfig`` checks).
        """
        return dataclasses.replace(
            defaults,
            threshold=float(self.threshold.value),
            seed_threshold=seed_threshold_from_control(self.seed_threshold.value),
            min_size=int(self.min_size.value),
            min_confidence=float(self.min_confidence.value),
        )


def _tips(p: PostProcessPanel) -> list[tuple[Any, str]]:
    again = "Applied at once, without running the network again."
    return [
        (
            p.threshold,
            "Cell probability (0.01 to 0.99) above which a pixel belongs to a cell. Lower: "
            "cells grow and may merge; higher: cells shrink and may split or vanish. " + again,
        ),
        (
            p.seed_threshold,
            "Separates touching cells: each cell grows from a seed, a core where the cell "
            "probability is above this, out to Threshold. Raise it when touching cells "
            "merge, lower it when single cells are cut in two. 0 (or at most Threshold): no "
            "seeds, plain threshold; with a boundary-class model such as the bundled one, "
            "outlines score 0.5, so a plain threshold below 0.5 joins touching cells. " + again,
        ),
        (
            p.min_size,
            "Objects smaller than this many pixels are removed (0 keeps all). " + again,
        ),
        (
            p.min_confidence,
            "Remove objects whose mean cell probability is below this, 0 to 0.99 (faint "
            "false detections on background texture or debris; 0 keeps all). " + again,
        ),
    ]
