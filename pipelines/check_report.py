"""Open a report.html in headless Chromium: take a screenshot and check that every image
(figure) in it decoded.

    python pipelines/check_report.py REPORT.html [--screenshot OUT.png] [--width 1200]
        [--height 6000] [--browser chromium]

A copy of the page gets a small script that, once the page has loaded, lists every
``<img>`` with its decoded size (``naturalWidth`` x ``naturalHeight``); Chromium's
``--dump-dom`` returns it. Prints one line per image, then a JSON line with ``images``,
``broken`` and ``screenshot``. Exit status 0 when every image rendered, 1 when one did
not, 2 for bad input (no such file, no browser).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dafsl.errors import DafslError, exit_on_error  # noqa: E402

PROBE = """<script>
window.addEventListener('load', () => {
  const rows = Array.from(document.images).map((im, i) =>
    [i, im.alt || im.getAttribute('title') || '', im.naturalWidth, im.naturalHeight, im.complete]);
  const pre = document.createElement('pre');
  pre.id = 'dafsl-image-check';
  pre.textContent = 'DAFSL-' + 'IMAGES ' + JSON.stringify(rows) + ' DAFSL-' + 'END';
  document.body.appendChild(pre);
});
</script>"""
ROWS = re.compile(r"DAFSL-IMAGES (.*?) DAFSL-END", re.S)


def find_browser(name: str | None) -> str:
    for candidate in ([name] if name else ["chromium", "chromium-browser", "google-chrome", "chrome"]):
        path = shutil.which(candidate)
        if path:
            return path
    raise DafslError("no Chromium found (tried chromium, chromium-browser, google-chrome); "
                     "install one or pass --browser PATH")


def run_browser(browser: str, args: list[str], url: str) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--virtual-time-budget=10000", *args, url]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        raise DafslError(f"{browser}: no answer within 180 s") from None
    return done.stdout


def check(html: Path, screenshot: Path, width: int, height: int, browser: str) -> dict:
    if not html.is_file():
        raise DafslError(f"{html}: no such file")
    text = html.read_text(encoding="utf-8", errors="replace")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / html.name  # same folder name rules; images are embedded
        probe.write_text(text.replace("</body>", PROBE + "</body>") if "</body>" in text
                         else text + PROBE, encoding="utf-8")
        dom = run_browser(browser, ["--dump-dom"], probe.resolve().as_uri())
    found = ROWS.search(dom)
    if not found:
        raise DafslError(f"{html}: the browser returned no page (is it an HTML file?)")
    rows = json.loads(found.group(1))
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    run_browser(browser, [f"--screenshot={screenshot.resolve()}", f"--window-size={width},{height}"],
                html.resolve().as_uri())
    broken = [r for r in rows if not (r[2] > 0 and r[3] > 0)]
    for i, alt, w, h, _ in rows:
        print(f"image {i:2d} {w:5d}x{h:<5d} {'ok' if w > 0 and h > 0 else 'BROKEN'}  {alt}")
    return {"images": len(rows), "broken": len(broken),
            "screenshot": str(screenshot) if screenshot.is_file() else None}


@exit_on_error
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python pipelines/check_report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("html", type=Path)
    p.add_argument("--screenshot", type=Path, default=None,
                   help="PNG to write (default: next to the report, report_screenshot.png)")
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--height", type=int, default=6000)
    p.add_argument("--browser", default=None)
    args = p.parse_args(argv)
    shot = args.screenshot or args.html.with_name("report_screenshot.png")
    result = check(args.html, shot, args.width, args.height, find_browser(args.browser))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(1 if main()["broken"] else 0)
