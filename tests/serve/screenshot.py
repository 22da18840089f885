"""The README's screenshot: the video page of a demo video at its peak frame, heat map on.

``python -m tests.serve.screenshot DEMO_OUT OUT.png [VIDEO]`` serves ``DEMO_OUT`` (a ``stmil
demo`` output) on a free port of 127.0.0.1, opens ``/video/VIDEO`` (default
``Fighting001_x264``) in headless Chromium at the frame where the first run's score peaks,
with the colours on the video's peak (a weakly supervised score is small in absolute terms),
and writes the page's player (video, heat map, score curves) as a palette PNG to ``OUT.png``,
with the browser test's code (tests/serve/test_serve.py).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from PIL import Image

from stmil.serve.app import create_app
from tests.serve.test_serve import _browser, _free_port, _wait


def shoot(root: Path, out: Path, video: str = "Fighting001_x264", width: int = 1100) -> dict:
    """Write the screenshot; returns the video's page data (frame shown, source)."""
    import uvicorn
    from starlette.testclient import TestClient

    app = create_app(root)
    detail = TestClient(app).get(f"/api/videos/{video}").json()
    source = next(s for s in detail["sources"] if not s.get("error") and s.get("frame_scores"))
    frame = source["stats"]["peak_frame"]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    driver = _browser()
    try:
        driver.set_window_size(1280, 900)
        url = f"http://127.0.0.1:{server.config.port}/video/{video}"
        driver.get(f"{url}?source={source['name']}&frame={frame}")
        _wait(driver, "return window.stmilPage && window.stmilPage.ready")
        _wait(driver, "const v = document.getElementById('video');"
                      "return v.readyState >= 2 && !v.seeking")
        _wait(driver, f"return window.stmilPage.frame() === {frame}")
        driver.execute_script("const s = document.getElementById('scale'); s.value = 'peak';"
                              "s.dispatchEvent(new Event('change'));")
        time.sleep(0.3)  # one more animation frame for the overlay
        bottom = driver.execute_script(
            "const r = document.getElementById('curve').getBoundingClientRect();"
            "return Math.ceil(r.bottom + window.scrollY) + 12")
        tmp = out.with_suffix(".full.png")
        driver.save_screenshot(str(tmp))
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(10)
    with Image.open(tmp) as im:
        shot = im.convert("RGB")
    shot = shot.crop((0, 0, shot.width, min(shot.height, bottom)))
    tmp.unlink()
    if shot.width > width:
        shot = shot.resize((width, round(shot.height * width / shot.width)),
                           Image.Resampling.LANCZOS)
    shot.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return {"frame": frame, "source": source["name"], "bytes": out.stat().st_size}


if __name__ == "__main__":
    print(shoot(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:]))
