"""Render the HTML report of some runs (or any page rlvr wrote) in headless Chromium; save a full-page screenshot.

    python scripts/report_screenshot.py runs/demo [runs/other ...] --out docs/report.png
    python scripts/report_screenshot.py sweeps/lld/compare.html --out docs/compare_lld.png   # a written page

Uses Debian's Chromium (``apt-get install chromium``) through the ``playwright`` package, and never
downloads a browser. The browser test (tests/test_report_browser.py) reuses ``open_page`` from here.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync")
VIEWPORT = {"width": 1440, "height": 900}
PLOTS_TIMEOUT_MS = 60_000


@contextmanager
def open_page(html: Path, *, block_network: bool = True) -> Iterator[tuple[object, list[str], list[str]]]:
    """Open ``html`` in headless Chromium and wait until every plot has drawn.

    Yields (page, problems, requests): ``problems`` collects console errors and uncaught page errors,
    ``requests`` every non-file URL the page tried to fetch (aborted when ``block_network``).
    """
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            page.on("console", lambda msg: msg.type == "error" and problems.append(f"console error: {msg.text}"))
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

            def route(request_route) -> None:
                url = request_route.request.url
                if url.startswith(("file:", "data:", "blob:")):
                    request_route.continue_()
                    return
                requests.append(url)
                request_route.abort() if block_network else request_route.continue_()

            page.route("**/*", route)
            page.goto(Path(html).resolve().as_uri(), wait_until="load")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.card .plotly-graph-div')]"
                ".every(d => d.querySelector('.main-svg'))",
                timeout=PLOTS_TIMEOUT_MS,
            )
            yield page, problems, requests
        finally:
            browser.close()


def screenshot(html: Path, out: Path) -> tuple[int, int]:
    """Full-page PNG of ``html`` at ``out``; returns the page's (width, height) in CSS pixels."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_page(html) as (page, problems, _):
        page.wait_for_timeout(300)  # let plotly's resize-on-load settle
        size = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        page.screenshot(path=str(out), full_page=True)
    if problems:
        print("the page reported problems:\n  " + "\n  ".join(problems))
    return int(size[0]), int(size[1])


def main(argv: list[str] | None = None) -> int:
    from rlvr_lab.diagnostics.report import write_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path,
                        help="run directories (each with a metrics.jsonl), or one .html page to capture as it is")
    parser.add_argument("--out", type=Path, default=Path("docs/report.png"), help="PNG to write")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument("--html", type=Path, default=None, help="also keep the HTML report here")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        parser.error(f"{CHROMIUM} not found; install Debian's chromium (apt-get install chromium)")
    if len(args.run_dirs) == 1 and args.run_dirs[0].suffix == ".html":
        width, height = screenshot(args.run_dirs[0], args.out)
        print(f"screenshot: {args.out} ({width}x{height} px)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        html = write_report(args.run_dirs, out=args.html or Path(tmp) / "report.html", title=args.title)
        width, height = screenshot(html, args.out)
    print(f"screenshot: {args.out} ({width}x{height} px)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
