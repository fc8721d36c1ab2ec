"""The HTML report in a real headless browser: Debian's Chromium (/usr/bin/chromium) driven by playwright.

Nothing is downloaded: playwright launches the system Chromium, and every non-file request the page
makes is recorded and aborted, so a report that needed the network would fail here. `make test`
installs Chromium when it can (root with apt-get); without it these tests skip.

Set RLVR_SCREENSHOT_DIR to keep the screenshot (e.g. as a CI artifact); otherwise it stays in pytest's
temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rlvr_lab.diagnostics.report import RUN_COLOURS, build_figures, write_report
from rlvr_lab.diagnostics.runlog import load_runs
from browser import needs_chromium, screenshot_module

RECORDED = Path(__file__).parent / "data" / "recorded_run"

pytestmark = needs_chromium


shot = screenshot_module()


def _second_run(dst: Path) -> Path:
    """A copy of the recording with keys the current trainer may not write, and a different reward curve."""
    dst.mkdir(parents=True)
    for name in ("summary.json", "config.yaml"):
        shutil.copy(RECORDED / name, dst / name)
    lines = []
    for line in (RECORDED / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["stage"] == "rl":
            step = record["step"]
            record["reward/mean"] = min(1.0, 0.1 + 0.04 * step)
            record["kl/ref"] = 0.002 * step
            for group in ("embed", "layers_0-1", "head"):
                record[f"grad_norm/{group}"] = 0.05 * step
        lines.append(json.dumps(record))
    (dst / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return dst


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, tuple[Path, list[Path]]]:
    """name -> (report HTML, the run dirs in it): one run, and two runs overlaid."""
    tmp = tmp_path_factory.mktemp("reports")
    second = _second_run(tmp / "second")
    cases = {"one-run": [RECORDED], "two-runs": [RECORDED, second]}
    return {name: (write_report(dirs, out=tmp / f"{name}.html"), dirs) for name, dirs in cases.items()}


@pytest.mark.parametrize("case", ["one-run", "two-runs"])
def test_page_renders_every_figure(reports, case):
    html, run_dirs = reports[case]
    expected = [card.id for card in build_figures(load_runs(run_dirs)).cards]
    with shot.open_page(html) as (page, problems, requests):
        said = int(page.get_attribute("body", "data-figures"))
        rendered = page.evaluate(
            "() => [...document.querySelectorAll('.card .plotly-graph-div')]"
            ".filter(d => d.querySelector('.main-svg')).map(d => d.id)"
        )
        rows = page.locator("table#summary tbody tr").count()
        traces_per_plot = page.evaluate(
            "() => Object.fromEntries([...document.querySelectorAll('.plotly-graph-div')]"
            ".map(d => [d.id, d.data.length]))"
        )
        page.hover("#plot-reward .nsewdrag", position={"x": 200, "y": 120})
        page.wait_for_selector("#plot-reward .hoverlayer .legend, #plot-reward .hoverlayer .hovertext", timeout=5000)
        hover = page.text_content("#plot-reward .hoverlayer")  # an SVG group: text, not innerText
    assert problems == [], problems
    assert requests == [], f"the report tried to reach the network: {requests}"
    assert said == len(expected) == len(rendered)
    assert rendered == [f"plot-{i}" for i in expected]
    assert rows == len(run_dirs)
    assert all(n > 0 for n in traces_per_plot.values())
    assert "step" in hover and "reward" in hover  # the hover shows the step and the values


def test_full_page_screenshot(reports, tmp_path):
    from PIL import Image

    html, run_dirs = reports["two-runs"]
    keep = Path(os.environ.get("RLVR_SCREENSHOT_DIR") or tmp_path)
    out = keep / "report-two-runs.png"
    width, height = shot.screenshot(html, out)
    print(f"screenshot: {out}")

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(out)
    image.load()
    assert image.format == "PNG"
    assert image.size == (width, height) and width == shot.VIEWPORT["width"]
    assert height > 2 * shot.VIEWPORT["height"], "a full page, not just the viewport"
    rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=width * height)
    assert len(colours) > 1000, "a blank or nearly blank page"
    background = max(colours)[0] / (width * height)
    assert background < 0.9, f"{background:.0%} of the page is one colour"
    counts = {colour: n for n, colour in colours}
    for hex_colour in RUN_COLOURS[: len(run_dirs)]:
        colour = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        assert counts.get(colour, 0) >= 100, f"run colour {hex_colour} hardly appears ({counts.get(colour, 0)} px)"
