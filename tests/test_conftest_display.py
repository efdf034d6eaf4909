"""Without a display the headless tests run and GUI tests are skipped; in CI (``CI`` set)
a missing display or a skipped GUI test fails the run, so nothing hides."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _pytest(args, cwd, ci: bool, display: bool = False):
    drop = ("CI",) if display else ("DISPLAY", "WAYLAND_DISPLAY", "CI")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _project(tmp_path, body: str) -> Path:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_it.py").write_text(body)
    return tmp_path


BODY = """
import pytest

def test_headless():
    assert 1 + 1 == 2

def test_gui(qtbot):
    pass
"""


@pytest.mark.slow
def test_without_display_headless_tests_run_gui_tests_skip(tmp_path):
    result = _pytest(["-rs"], _project(tmp_path, BODY), ci=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert "run under Xvfb" in result.stdout


@pytest.mark.slow
def test_in_ci_a_missing_display_fails_early_with_advice(tmp_path):
    result = _pytest([], _project(tmp_path, BODY), ci=True)
    assert result.returncode != 0
    assert "No display" in result.stderr + result.stdout
    assert "xvfb-run" in result.stderr + result.stdout


@pytest.mark.slow
def test_in_ci_a_skipped_gui_test_fails(tmp_path):
    body = "import pytest\n\ndef test_gui(qtbot):\n    pytest.skip('no Qt binding')\n"
    project = _project(tmp_path, body)
    if not os.environ.get("DISPLAY"):  # no display here: the run stops earlier (above)
        return
    result = _pytest([], project, ci=True, display=True)
    assert result.returncode != 0 and "1 failed" in result.stdout
    assert "GUI test skipped in CI" in result.stdout
