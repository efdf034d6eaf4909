"""Every control a user can touch in the four docks explains itself in a tooltip.

The walk goes over ALL Qt descendants of each dock (sub-panels, the folded "Advanced"
section, the parts of magicgui's compound widgets), not over a hand-made list, so a
control added later without a tooltip fails here.

What counts as a control: buttons (push buttons, check boxes, the "Advanced" toggle,
a file picker's button), spin boxes (also a slider's number read-out), sliders, combo
boxes, line edits and list widgets. Left out, on purpose:
- scroll bars: Qt adds them to lists and to a combo box's pop-up by itself;
- the text field inside a spin box (``qt_spinbox_lineedit``): a part of the spin box that
  Qt creates; hovering it shows the spin box's tooltip (Qt hands an unanswered tooltip
  request to the parent widget), and the spin box itself is checked.
The parts of magicgui's compound widgets (a slider and its read-out, a file picker's
field and button) are separate Qt widgets that the user hovers separately, so each must
carry its own tooltip.
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QListWidget,
    QPushButton,
    QScrollBar,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

CONTROL_TYPES = (
    QAbstractButton,
    QAbstractSpinBox,
    QAbstractSlider,
    QComboBox,
    QLineEdit,
    QListWidget,
)

# at least this many controls per dock (counted by hand from the code, rounded down):
# the walk must really reach the controls, or the test could not fail
MIN_CONTROLS = {"Annotate": 24, "Weight Map": 12, "Fine-tune": 26, "Predict": 16}


def controls(root: QWidget) -> list[QWidget]:
    """The user-facing controls among all descendants of ``root`` (see the module doc)."""
    found = []
    for widget in root.findChildren(QWidget):
        if not isinstance(widget, CONTROL_TYPES) or isinstance(widget, QScrollBar):
            continue
        if isinstance(widget, QLineEdit) and isinstance(widget.parent(), QAbstractSpinBox):
            continue  # the spin box's own text field; the spin box is checked instead
        found.append(widget)
    return found


def describe(widget: QWidget) -> str:
    text = widget.text() if hasattr(widget, "text") and callable(widget.text) else ""
    parent = widget.parentWidget()
    label = f" in {type(parent).__name__}" if parent is not None else ""
    return f"{type(widget).__name__} {text!r}{label}".strip()


def missing_tooltips(root: QWidget) -> list[str]:
    return [describe(w) for w in controls(root) if not w.toolTip().strip()]


def test_the_walk_reports_a_control_without_tooltip(qtbot):
    # the check itself can fail: a bare button (also one nested in a sub-panel) is reported
    root = QWidget()
    qtbot.addWidget(root)
    panel = QWidget(root)
    QVBoxLayout(panel).addWidget(QPushButton("Bare"))
    spin = QSpinBox(root)
    spin.setToolTip("has one")
    assert missing_tooltips(root) == ["QPushButton 'Bare' in QWidget"]


@pytest.mark.parametrize("name", list(MIN_CONTROLS))
def test_every_control_has_a_tooltip(make_napari_viewer, name):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.uint8), name="image")  # the combo boxes get items
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", name)
    root = getattr(widget, "native", widget)  # magicgui docks wrap a Qt widget
    found = controls(root)
    assert len(found) >= MIN_CONTROLS[name], [describe(w) for w in found]
    missing = [describe(w) for w in found if not w.toolTip().strip()]
    assert not missing, f"{name} dock: controls without a tooltip: {missing}"
