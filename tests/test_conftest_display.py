"""Without a display the suite stops at once with a clear message (no Qt abort)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_missing_display_fails_early_with_advice():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/test_cli.py"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "No display" in result.stderr + result.stdout
    assert "xvfb-run" in result.stderr + result.stdout
