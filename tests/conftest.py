"""Shared fixtures. GUI tests need a display: run the suite under Xvfb (see README)."""

from __future__ import annotations

import os
import sys

import pytest


def _has_display() -> bool:
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pytest_configure(config):
    if not _has_display():
        raise pytest.UsageError(
            "No display: the GUI tests open real napari windows. Run the tests under Xvfb:\n"
            '  xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest\n'
            "(on Debian: apt-get install xvfb xauth, plus the Qt libraries listed in .ci/run)."
        )


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
