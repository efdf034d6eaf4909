"""Shared fixtures and markers. GUI tests (marked ``gui`` automatically: they use a napari
viewer or qtbot) need a display: run the suite under Xvfb (see README); without one they
are skipped, and in CI that fails the run. ``-m "not slow"`` leaves out the slow tests."""

from __future__ import annotations

import os
import sys

import pytest

GUI_FIXTURES = {"make_napari_viewer", "qtbot", "make_napari_viewer_proxy"}


def _has_display() -> bool:
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _strict() -> bool:
    """In CI (``CI`` set, as .ci/run does) a GUI test that does not run fails the run."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def pytest_configure(config):
    # every test computes in fp32, on every machine, module- and session-wide fixtures
    # included: on CPUs with bf16 hardware the package autocasts to bf16
    # (core/device.py), which tests/core/test_precision.py checks on its own
    os.environ["NAPARI_UNET_CELLS_PRECISION"] = "fp32"
    config.addinivalue_line("markers", "gui: opens Qt widgets or napari (needs a display)")
    config.addinivalue_line("markers", "slow: takes more than ~5 s on 2 CPU cores")


def pytest_collection_modifyitems(config, items):
    """Mark tests that use Qt as ``gui``. Without a display they are skipped (headless
    tests still run), except in CI, where that is an error: run under Xvfb (see README)."""
    for item in items:
        if GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gui)
    gui = [item for item in items if item.get_closest_marker("gui") is not None]
    if gui and not _has_display():
        message = (
            "No display: the GUI tests open real napari windows. Run the tests under Xvfb:\n"
            '  xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest\n'
            "(on Debian: apt-get install xvfb xauth, plus the Qt libraries listed in .ci/run)."
        )
        if _strict():
            raise pytest.UsageError(message)
        skip = pytest.mark.skip(reason="no display (run under Xvfb to include GUI tests)")
        for item in gui:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped GUI test is a failure, so that nothing hides behind a skip."""
    outcome = yield
    report = outcome.get_result()
    if _strict() and report.skipped and item.get_closest_marker("gui") is not None:
        report.outcome = "failed"
        report.longrepr = f"GUI test skipped in CI: {report.longrepr}"


@pytest.fixture
def tiny_config():
    """A U-Net small enough for CPU tests: base 4, depth 2 (valid sizes 4k + 4 from 44)."""
    from napari_unet_cells.core.config import ModelConfig

    return ModelConfig(base=4, depth=2, dropout=0.0)


@pytest.fixture
def one_torch_thread():
    """Tiny networks run fastest on one thread; on a busy 2-core machine torch's thread
    pool makes each small operation wait (60 tiny steps: 5 s on 1 thread, 150 s on 2)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder no file can be created in, like a read-only share. As root, permissions
    do not stop writes: /sys (the kernel refuses new files there) stands in."""
    from pathlib import Path

    if os.geteuid() == 0:
        yield Path("/sys")
        return
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@pytest.fixture(autouse=True)
def _plugin_home(tmp_path_factory, monkeypatch):
    """Default folders (autosaved annotations, models) go to a temporary folder, never
    into the home folder of whoever runs the tests."""
    monkeypatch.setenv("NAPARI_UNET_CELLS_HOME", str(tmp_path_factory.mktemp("home")))
