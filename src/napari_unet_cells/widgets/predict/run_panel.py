"""The Predict dock's run controls: options, Run / Stop, progress and the status line."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, Label, ProgressBar, PushButton

from .._tips import tip


class RunPanel:
    """Flip TTA, the two display toggles, Run, Stop, the progress bar and the status."""

    def __init__(self) -> None:
        self.tta = CheckBox(text="Flip test-time augmentation (4x slower)", value=False)
        self.show_probabilities = CheckBox(text="Also show probabilities", value=False)
        self.show_grid = CheckBox(text="Show tile grid", value=False)
        self.run_button = PushButton(text="Run")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="Progress", min=0, max=1, value=0)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # the size note after a run is long
        for widget, text in _tips(self):
            tip(widget, text)

    @property
    def widgets(self) -> list[Any]:
        """The controls, in the order the dock shows them."""
        return [
            self.tta,
            self.show_probabilities,
            self.show_grid,
            self.run_button,
            self.stop_button,
            self.progress,
            self.status,
        ]

    def running(self, running: bool) -> None:
        """Enable Stop (and disable Run) while a prediction runs, and the reverse. The bar
        shows "busy" until the first tile (loading the model, measuring the cell size)."""
        self.run_button.enabled = not running
        self.stop_button.enabled = running
        if running:
            self.progress.max = 0  # Qt's busy bar (min = max = 0)
            self.progress.value = 0
        elif self.progress.max == 0:  # ended before its first tile
            self.progress.max = 1

    def show_progress(self, event: Any) -> None:
        """Show a ``core.predict.PredictProgress`` event: bar, plane and tile counts."""
        if event.total:
            self.progress.max = event.total
            self.progress.value = event.done
            plane = f"plane {event.plane + 1}/{event.n_planes}, " if event.n_planes > 1 else ""
            self.status.value = f"{plane}tile {event.done}/{event.total}"


def size_note(scale: Any) -> str:
    """One line on the cell size used, for the status (core/scale.py ScaleChoice)."""
    if scale.diameter is None:
        return ""
    how = "estimated" if scale.estimated else "given"
    text = f"Cell diameter {scale.diameter:.0f} px ({how}"
    if scale.model_diameter:
        text += f"; model {scale.model_diameter:g} px"
    if scale.factor != 1.0:
        text += f"; resampled x{scale.factor:.2f}"
    return text + ")."


def result_text(n_cells: int, layout: str, result: Any) -> str:
    """The status after a run: cells, how the image was read (when not one plain plane),
    and the cell size used; with no cell, the run's last note says why (no signal, an
    image too small)."""
    read_as = f" Read as {layout}." if "," in layout or not layout.startswith("1 ") else ""
    cells = "1 cell." if n_cells == 1 else f"{n_cells} cells."
    notes = [m for m in result.messages if m != result.scale.message]
    why = f" {notes[-1]}" if n_cells == 0 and notes else ""
    return f"{cells}{why}{read_as} {size_note(result.scale)}".strip()


def _tips(p: RunPanel) -> list[tuple[Any, str]]:
    return [
        (
            p.tta,
            "Average the predictions of 4 flipped copies of the image: a little smoother, 4 "
            "times slower.",
        ),
        (
            p.show_probabilities,
            "Also add the cell probability (0 to 1) as an image layer; it helps to choose the "
            "threshold.",
        ),
        (
            p.show_grid,
            "Show the tiles: yellow = the part of the image each tile writes; blue = the "
            "larger area one tile reads (its context margin, 92 px for a depth-4 network, "
            "mirrored at the image edge).",
        ),
        (
            p.run_button,
            "Segment the chosen image (progress per tile below). Writes '<image> cells'; a "
            "later run replaces only that layer, asking first if you edited it.",
        ),
        (p.stop_button, "Stop after the current tile; no layer is written."),
    ]
