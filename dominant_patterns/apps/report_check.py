"""Render a report page in headless Chromium and check that every table and image is there and loads.

    python -m dominant_patterns.report.browser_check experiments/embedded.html --screenshot shot.png
    make report-check

A copy of the page (beside it, so relative image paths resolve) gets a small script that records script
and resource errors from the start and, once the page has loaded, writes what the browser sees (tables and
their rows, each image's natural size) into the DOM, which ``--dump-dom`` prints. Needs Debian's
``chromium`` (``apt-get install -y chromium``); nothing is installed here.
"""

from __future__ import annotations

import argparse
import html as html_lib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--allow-file-access-from-files")
INSTALL_HINT = "install it with `apt-get install -y chromium` (Debian/Ubuntu, as root) or set $CHROMIUM=/path/to/it"
PROBE = """<script>
window.__dpErrors = [];
window.addEventListener('error', function (e) {
  var t = e.target || {};
  window.__dpErrors.push(t.src ? 'failed to load ' + t.src : String(e.message || e));
}, true);
window.addEventListener('load', function () {
  var tables = Array.prototype.map.call(document.querySelectorAll('table'), function (t) { return t.rows.length; });
  var images = Array.prototype.map.call(document.images, function (i) {
    return {src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth, height: i.naturalHeight};
  });
  var pre = document.createElement('pre');
  pre.id = 'dp-check';
  pre.textContent = JSON.stringify({tables: tables, images: images, errors: window.__dpErrors,
                                    height: document.documentElement.scrollHeight});
  document.body.appendChild(pre);
});
</script>"""


def find_browser() -> str | None:
    """``$CHROMIUM`` or the first Chromium/Chrome on the PATH."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def _run(browser: str, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="dp-chromium-") as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout, check=False)


def inspect_page(page: Path, browser: str, timeout: float = 120) -> dict[str, Any]:
    """What the browser sees on ``page``: rows per table, each image's load state and size, errors."""
    text = page.read_text()
    probed = re.sub(r"<head>", "<head>" + PROBE, text, count=1) if "<head>" in text else PROBE + text
    fd, tmp = tempfile.mkstemp(prefix=".check-", suffix=".html", dir=page.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(probed)
        proc = _run(browser, ["--virtual-time-budget=15000", "--dump-dom", Path(tmp).resolve().as_uri()], timeout)
    finally:
        Path(tmp).unlink(missing_ok=True)
    match = re.search(r'<pre id="dp-check">(.*?)</pre>', proc.stdout, re.S)
    if not match:
        raise RuntimeError(f"{browser} printed no page state (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return json.loads(html_lib.unescape(match.group(1)))


def problems(page: Path, seen: dict[str, Any]) -> list[str]:
    """Every way the rendered page differs from its source: missing tables/images, unloaded images, errors."""
    text = page.read_text()
    out = []
    want_tables, want_images = text.count("<table"), text.count("<img")
    if len(seen["tables"]) != want_tables:
        out.append(f"{len(seen['tables'])} tables rendered, the page has {want_tables}")
    out += [f"table {i + 1} has no rows" for i, rows in enumerate(seen["tables"]) if rows < 1]
    if len(seen["images"]) != want_images:
        out.append(f"{len(seen['images'])} images rendered, the page has {want_images}")
    out += [f"image {im['src']} did not load ({im['width']}x{im['height']})" for im in seen["images"]
            if not im["complete"] or im["width"] == 0 or im["height"] == 0]
    out += [f"error: {e}" for e in seen["errors"]]
    return out


def screenshot(page: Path, out: Path, browser: str, height: int, width: int = 1400, timeout: float = 120) -> Path:
    """A full-page PNG (window as tall as the page, at most 16,000 px)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    size = f"{width},{max(600, min(int(height) + 40, 16000))}"
    proc = _run(browser, ["--virtual-time-budget=15000", f"--window-size={size}", f"--screenshot={out.resolve()}",
                          page.resolve().as_uri()], timeout)
    if not out.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("page", type=Path, help="the report page (experiments/<scale>.html)")
    parser.add_argument("--screenshot", type=Path, help="also write a full-page PNG here")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"error: {args.page} does not exist; build it first with `make report`", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print(f"error: no Chromium found to render {args.page}: {INSTALL_HINT}", file=sys.stderr)
        return 2
    seen = inspect_page(args.page, browser)
    found = problems(args.page, seen)
    print(f"{args.page}: {len(seen['tables'])} tables ({sum(seen['tables'])} rows), {len(seen['images'])} images "
          f"loaded in {Path(browser).name}" + ("" if not found else f"; {len(found)} problems:"))
    for p in found:
        print(f"  {p}")
    if args.screenshot:
        print(f"screenshot: {screenshot(args.page, args.screenshot, browser, seen['height'])}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
