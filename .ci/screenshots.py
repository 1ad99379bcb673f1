"""The README's screenshots of the built site, taken in headless Chromium, offline.

    python .ci/screenshots.py [--html _build/html] [--out docs/screenshots]

Three JPEG files: a chapter's figure (chapter 3's first Plotly figure), a feature's dashboard
(the viewer, for the first feature chapter 2 links to) and the live lens on one sentence, after the model in
the browser has shown its features. Run it after `make book` (or `make test`) on the built site.
It drives the pages with tests/live_pages_check.py's DevTools driver and static server.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import base64
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import live_pages_check as live  # noqa: E402  (the DevTools driver and the static server)

LENS_TEXT = "The capital of France is Paris, and def f(x): return x + 1"


async def shoot(page: "live.Page", url: str, out: Path, *, wait_js: str | None = None,
                scroll_to: str | None = None, width: int = 1200, height: int = 760) -> None:
    """Open `url`, wait until `wait_js` is true (if given), scroll `scroll_to` into view, save."""
    await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                    deviceScaleFactor=1, mobile=False)
    await page.call("Page.navigate", url=url)
    await asyncio.sleep(1.0)
    if wait_js:
        for _ in range(600):
            if await page.js(wait_js):
                break
            await asyncio.sleep(0.25)
        else:
            raise SystemExit(f"screenshots: {url}: never ready ({wait_js})")
    if scroll_to:
        await page.js(f"document.querySelector({scroll_to!r}).scrollIntoView({{block: 'center'}})")
    await asyncio.sleep(1.5)  # figures and fonts settle
    fmt = "png" if out.suffix == ".png" else "jpeg"
    shot = await page.call("Page.captureScreenshot", format=fmt, **({"quality": 70} if fmt == "jpeg" else {}))
    out.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshots: {out} ({out.stat().st_size // 1024} KB)")


async def main_async(html: Path, out: Path, ext: str = ".jpg") -> None:
    server, base = live.serve(html)
    chromium = live.find_chromium()
    profile = tempfile.mkdtemp(prefix="chromium-shots-")
    port_file = Path(profile) / "DevToolsActivePort"
    proc = subprocess.Popen(
        [chromium, *live.FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--remote-allow-origins=*", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(150):
            if port_file.is_file() and port_file.read_text().strip():
                break
            time.sleep(0.2)
        page = await live.Page.open(int(port_file.read_text().split()[0]))
        out.mkdir(parents=True, exist_ok=True)
        await shoot(page, base + "book/03_comparing_saes.html", out / f"chapter{ext}",
                    wait_js="!!document.querySelector('.plotly-graph-div .main-svg')",
                    scroll_to=".plotly-graph-div")
        chapter2 = (html / "book" / "02_feature_exploration.html").read_text()
        slug, n = re.search(r'href="\.\./features/([^"/]+)/(\d+)\.html"', chapter2).groups()
        await shoot(page, f"{base}features/dashboard.html#{slug}/{n}", out / f"dashboard{ext}",
                    wait_js="document.readyState === 'complete'", height=900)
        sae = "smollm2-135m-res/blocks.15.hook_resid_pre"
        await shoot(page, f"{base}lens.html?sae={quote(sae)}&text={quote(LENS_TEXT)}",
                    out / f"lens{ext}", wait_js="document.body.dataset.state === 'done'")
    finally:
        proc.terminate()
        server.shutdown()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python .ci/screenshots.py", description=__doc__.split("\n")[0])
    p.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="the built site")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where to write")
    p.add_argument("--png", action="store_true", help="PNG files instead of JPEG (to look at)")
    args = p.parse_args(argv)
    if not (args.html / "book" / "03_comparing_saes.html").is_file():
        p.error(f"argument --html: {args.html} has no built chapters (make book first)")
    asyncio.run(main_async(args.html, args.out.resolve(), ".png" if args.png else ".jpg"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
