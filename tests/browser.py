"""What the headless-Chromium tests share: the skip mark and the browser launch of scripts/report_screenshot.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CHROMIUM = Path("/usr/bin/chromium")

needs_chromium = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (Debian: apt-get install chromium; "
                                                     "`make test` does it when run as root)"),
]


def screenshot_module():
    """scripts/report_screenshot.py, which holds the browser launch the script and the tests use."""
    spec = importlib.util.spec_from_file_location("report_screenshot", ROOT / "scripts" / "report_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
