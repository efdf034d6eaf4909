"""``unet-cells demo``: napari with the plugin's four docks and the synthetic sample."""

from __future__ import annotations

import argparse
import os
import sys

from ..core.errors import UNetCellsError

DEMO_DOCKS = ("Annotate", "Weight Map", "Fine-tune", "Predict")  # tabs; the last in front


def add_demo(sub) -> None:
    """Declare ``unet-cells demo`` on the ``sub`` parsers.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The ``unet-cells`` subparsers; ``run_demo`` is set as the command's ``run``.
    """
    p = sub.add_parser(
        "demo",
        help="open napari with the plugin's docks and its synthetic sample data",
        description="Opens a napari window (needs napari with a Qt binding and a display) "
        "with the synthetic nuclei sample and the four docks as tabs, Predict in front.",
    )
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Open the demo window and run napari's event loop until it is closed.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (``demo`` takes no options).

    Returns
    -------
    int
        0 when the window was closed.
    """
    try:
        import napari
    except ImportError:
        raise UNetCellsError(
            'napari is not installed: pip install "napari[pyqt6]" (or napari with another '
            "Qt binding), then run unet-cells demo again."
        ) from None
    _check_display()
    try:
        viewer = napari.Viewer(title="U-Net Cells demo")
    except ImportError as err:  # napari without a Qt binding
        raise UNetCellsError(
            f"napari cannot open a window ({err}). Install a Qt binding: "
            'pip install "napari[pyqt6]", then run unet-cells demo again.'
        ) from None
    viewer.open_sample("napari-unet-cells", "synthetic_nuclei")
    setup_demo(viewer)
    napari.run()
    return 0


def _check_display() -> None:
    """On Linux without a display, say so (Qt would abort with a misleading message
    about xcb libraries)."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UNetCellsError(
            "No display: unet-cells demo opens a napari window. Run it in a desktop "
            "session (or ssh -X), or under a virtual display: xvfb-run -a unet-cells demo."
        )


def setup_demo(viewer) -> None:
    """Arrange the demo's window: the four docks as tabs (Predict in front), the image
    selected and fitted to the canvas that is left once the docks are in.

    Parameters
    ----------
    viewer : napari.Viewer
        A viewer holding the ``synthetic_nuclei`` sample's two layers.
    """
    from qtpy.QtWidgets import QApplication

    image = viewer.layers["synthetic nuclei"]
    viewer.layers["synthetic nuclei ground truth"].visible = False  # the image first
    docks = [
        viewer.window.add_plugin_dock_widget("napari-unet-cells", name, tabify=True)[0]
        for name in DEMO_DOCKS
    ]
    docks[-1].raise_()  # Predict in front: one click of Run segments the sample
    viewer.layers.selection.active = image  # not the hidden ground truth
    QApplication.processEvents()  # the docks take their width before the view is fitted
    viewer.reset_view()
