"""The sweep comparison page in a real headless browser: Debian's Chromium (/usr/bin/chromium) driven by playwright.

Like the run report's browser test (tests/test_report_browser.py), and with the same launcher
(scripts/report_screenshot.py ``open_page``): nothing is downloaded, every non-file request the page makes is
recorded and aborted, so a page that needed the network fails here. Without Chromium these tests skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlvr_lab.diagnostics.report import RUN_COLOURS
from rlvr_lab.lab.compare import build_figures, load_comparison, write_comparison

from test_lab_compare import make_sweep
from browser import needs_chromium, screenshot_module


pytestmark = needs_chromium


shot = screenshot_module()


@pytest.fixture(scope="module")
def page_and_sweep(tmp_path_factory) -> tuple[Path, Path]:
    sweep = make_sweep(tmp_path_factory.mktemp("compare"))
    html, _ = write_comparison(sweep)
    return html, sweep


def test_page_draws_every_plot_without_errors(page_and_sweep):
    html, sweep = page_and_sweep
    expected = [card.id for card in build_figures(load_comparison(sweep)).cards]
    with shot.open_page(html) as (page, problems, requests):
        said = int(page.get_attribute("body", "data-figures"))
        rendered = page.evaluate(
            "() => [...document.querySelectorAll('.card .plotly-graph-div')]"
            ".filter(d => d.querySelector('.main-svg')).map(d => d.id)"
        )
        traces_per_plot = page.evaluate(
            "() => Object.fromEntries([...document.querySelectorAll('.plotly-graph-div')]"
            ".map(d => [d.id, d.data.length]))"
        )
        drawn_lines = page.evaluate(
            "() => Object.fromEntries([...document.querySelectorAll('.plotly-graph-div')]"
            ".map(d => [d.id, d.querySelectorAll('.scatterlayer .trace path.js-line, .barlayer .point').length]))"
        )
        rows = page.locator("table#comparison tbody tr").count()
        missing = page.locator("section#missing li").all_text_contents()
        # inside base's band, between two steps: the band must not take the hover, the nearest step shows
        inside = page.evaluate(
            "() => { const l = document.querySelector('#plot-reward')._fullLayout;"
            " return {x: l.xaxis.l2p(3.5), y: l.yaxis.l2p(0.36)}; }"
        )
        page.hover("#plot-reward .nsewdrag", position=inside)
        page.wait_for_selector("#plot-reward .hoverlayer .legend, #plot-reward .hoverlayer .hovertext", timeout=5000)
        hover = page.text_content("#plot-reward .hoverlayer")  # an SVG group: text, not innerText
    assert problems == [], problems
    assert requests == [], f"the page tried to reach the network: {requests}"
    assert expected == ["phases", "reward", "likelihood", "entropy", "low_prob", "kl"]
    assert said == len(expected) == len(rendered)
    assert rendered == [f"plot-{i}" for i in expected]
    assert all(n > 0 for n in traces_per_plot.values()), traces_per_plot
    assert all(n > 0 for n in drawn_lines.values()), f"a plot with nothing drawn: {drawn_lines}"
    assert rows == 2
    assert len(missing) == 2 and any("failed" in m for m in missing)
    # both conditions at step 3 or 4, with the seed count and the range over seeds (base: 0.1 t + 0.01 ± 0.01)
    assert "base" in hover and "high lr" in hover and "seeds 3" in hover
    assert "range 0.3000 to 0.3200" in hover or "range 0.4000 to 0.4200" in hover, hover


def test_full_page_screenshot_shows_each_condition(page_and_sweep, tmp_path):
    from PIL import Image

    html, _ = page_and_sweep
    out = tmp_path / "compare.png"
    width, height = shot.screenshot(html, out)
    image = Image.open(out)
    image.load()
    assert image.format == "PNG" and image.size == (width, height) and width == shot.VIEWPORT["width"]
    assert height > shot.VIEWPORT["height"], "a full page, not just the viewport"
    colours = image.convert("RGB").getcolors(maxcolors=width * height)
    assert len(colours) > 1000, "a blank or nearly blank page"
    counts = {colour: n for n, colour in colours}
    for hex_colour in RUN_COLOURS[:2]:  # the two conditions' lines
        colour = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        shown = counts.get(colour, 0)
        assert shown >= 100, f"condition colour {hex_colour} hardly appears ({shown} px)"
