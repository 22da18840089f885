"""The live page of ``stmil watch --serve``: the feed and its routes with Starlette's test
client, the flags' checks, and in headless Chromium a watch of a camera served over TCP on
127.0.0.1 that drops and comes back: the page shows the newest frame with its map, the
incident as it happens, and the second connection."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from stmil.errors import ConfigError  # noqa: E402
from stmil.live.incidents import ClipScore  # noqa: E402
from stmil.live.watch import WatchConfig  # noqa: E402
from stmil.serve.live import FRAME_WIDTH, LiveFeed, create_live_app, watch_served  # noqa: E402
from tests.conftest import assert_one_line_error, run_cli  # noqa: E402
from tests.serve.test_serve import _browser, _free_port, _wait  # noqa: E402


def _clip(start: int, hot: int, value: float = 0.9) -> ClipScore:
    scores = np.full(49, 0.1, dtype=np.float32)
    scores[hot] = value
    return ClipScore(start, start + 16, scores, (10.0, 20.0, 30.0, 40.0))


def _sse(text: str) -> list[tuple[int, str, dict]]:
    """``(id, event, data)`` of each message of a server-sent events body."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if ": " in line and not line.startswith(":"))
        if "event" in fields:
            out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return out


def test_feed_state_frame_and_events():
    feed = LiveFeed("tcp://127.0.0.1:5000", threshold=0.5)
    client = TestClient(create_live_app(feed))
    assert client.get("/api/live/frame.jpg").status_code == 404  # nothing scored yet
    middle = np.zeros((480, 800, 3), np.uint8)
    middle[:, :400] = 255  # left half white
    feed.clip(_clip(0, 3), middle, connection=1)
    start = {"type": "start", "id": 1, "start_frame": 0, "peak_score": 0.9,
             "track": [{"frame": 8}]}
    feed.line(json.dumps(start))
    feed.clip(_clip(16, 10, 0.7), middle, connection=2)

    s = client.get("/api/live/state").json()
    assert s["source"] == "tcp://127.0.0.1:5000" and s["threshold"] == 0.5 and s["seq"] == 3
    assert [(p["start"], p["connection"]) for p in s["scores"]] == [(0, 1), (16, 2)]
    assert [p["score"] for p in s["scores"]] == pytest.approx([0.9, 0.7])
    latest = s["latest"]
    assert latest["start"] == 16 and latest["grid"] == 7 and latest["connection"] == 2
    assert (latest["width"], latest["height"]) == (800, 480) and len(latest["cells"]) == 49
    assert int(np.argmax(latest["map"])) == 10 and latest["cells"][-1] == pytest.approx(
        [800 * 6 / 7, 480 * 6 / 7, 800, 480], abs=0.01)
    assert s["lines"] == [{k: v for k, v in start.items() if k != "track"}]

    r = client.get("/api/live/frame.jpg")
    assert r.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as im:
        px = np.asarray(im.convert("RGB"))
    assert px.shape == (384, FRAME_WIDTH, 3)  # 800 x 480 made 640 wide
    assert px[:, :300].mean() > 240 and px[:, 340:].mean() < 15

    feed.close()  # the stream ends with the feed
    events = _sse(client.get("/api/live/events?since=0").text)
    assert [(n, kind) for n, kind, _ in events] == [(1, "clip"), (2, "line"), (3, "clip"),
                                                    (4, "closed")]
    assert events[1][2]["id"] == 1 and events[2][2]["score"] == pytest.approx(0.7)
    resumed = _sse(client.get("/api/live/events", headers={"Last-Event-ID": "2"}).text)
    assert [n for n, _, _ in resumed] == [3, 4]


@pytest.mark.parametrize("bad, name", [({"serve": 0}, "serve"), ({"serve": 70000}, "serve"),
                                       ({"serve": True}, "serve"),
                                       ({"serve": 8000, "serve_host": ""}, "serve_host"),
                                       ({"serve": 8000, "serve_host": "a b"}, "serve_host"),
                                       ({"serve_host": "0.0.0.0"}, "serve_host")])
def test_bad_serve_settings(bad, name):
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        WatchConfig(**bad)


def test_cli_serve_flags(capsys, tmp_path):
    code, _, err = run_cli(capsys, "watch", "cam.mkv", "--model", tmp_path, "--serve", "0")
    assert code == 1
    assert_one_line_error(err, "--serve must be a whole number from 1 to 65535, got 0")
    with socket.socket() as taken:  # a taken port: said before the model or camera is read
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(capsys, "watch", "cam.mkv", "--model", tmp_path, "--threshold",
                               "0.5", "--serve", port)
    assert code == 1
    assert_one_line_error(err, f"127.0.0.1:{port}", "--serve")


def test_another_host_is_warned_about(monkeypatch, caplog, tmp_path):
    import stmil.serve.live as live

    monkeypatch.setattr(live, "watch", lambda *a, **k: {"ended": "end of input"})
    events = live.EventConfig(threshold=0.5)
    cfg = WatchConfig(serve=_free_port(), serve_host="0.0.0.0")
    with caplog.at_level(logging.INFO, logger="stmil"):
        assert watch_served("cam.mkv", tmp_path, events, cfg) == {"ended": "end of input"}
    assert any("anyone who can reach this machine" in m and "the camera" in m
               for m in caplog.messages)


def _page_up(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def test_live_page_in_chromium(live_run, tmp_path_factory):
    """A camera on 127.0.0.1 (tests/live/serve_ts.py) sends 48 quiet frames and stops; the
    watch reconnects to a second one whose event runs from frame 32 to 64. The page, opened
    during the first stream, shows the newest frame with its map, the incident's ``start``
    line as it happens and the second connection, without a reload."""
    from stmil.live.events import event_config
    from tests.live.test_watch import serve as camera
    from tests.live.test_watch import wait_line

    shots = tmp_path_factory.mktemp("serve-screenshots-live")
    print(f"screenshots: {shots}")
    cam, page = _free_port(), _free_port()
    events = event_config(live_run, threshold=0.5, merge_gap=0.5)
    cfg = WatchConfig(drop=False, timeout=2, backoff=0.2, max_backoff=0.5, heartbeat=0,
                      update=0, device="cpu", serve=page)
    stop, result, lines = threading.Event(), {}, []
    first = camera(cam, 48)
    wait_line(first, "ready")
    thread = threading.Thread(target=lambda: result.update(summary=watch_served(
        f"tcp://127.0.0.1:{cam}", live_run, events, cfg, emit=lines.append, stop=stop)))
    thread.start()
    second = None
    driver = _browser()
    try:
        _page_up(page)
        driver.get(f"http://127.0.0.1:{page}/")
        _wait(driver, "return window.stmilLive && window.stmilLive.ready")
        _wait(driver, "return window.stmilLive.clips > 0", 60)
        first.wait(timeout=60)
        second = camera(cam, 96, (32, 64))
        _wait(driver, "return document.querySelector('#feed li[data-type=\"start\"]')", 90)
        start = driver.find_element("css selector", '#feed li[data-type="start"]').text
        assert start.startswith("#1 start")
        _wait(driver, "return window.stmilLive.latest.connection === 2")
        assert "connection 2" in driver.find_element("id", "status").text
        driver.save_screenshot(str(shots / "live.png"))
        _wait(driver, "return document.querySelector('#feed li[data-type=\"end\"]')", 60)
        stop.set()
        thread.join(timeout=60)
        _wait(driver, "return document.getElementById('status').textContent"
                      ".includes('ended')")
        # the last frame's map: more opaque on its hottest cell than on its coldest
        _wait(driver, "return document.getElementById('frame').complete")
        latest = driver.execute_script("return window.stmilLive.latest")
        values = np.array(latest["map"])
        hot, cold = int(values.argmax()), int(values.argmin())
        alphas = driver.execute_script(
            "const c = document.getElementById('overlay'); const g = c.getContext('2d');"
            "const d = window.stmilLive.latest;"
            "return arguments[0].map((i) => { const b = d.cells[i];"
            " const x = (b[0] + b[2]) / 2 * c.width / d.width,"
            " y = (b[1] + b[3]) / 2 * c.height / d.height;"
            " return g.getImageData(Math.floor(x), Math.floor(y), 1, 1).data[3]; });",
            [hot, cold])
        assert alphas[1] > 0 and (alphas[0] > alphas[1] if np.ptp(values) > 0.05
                                  else alphas[0] >= alphas[1])
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        stop.set()
        driver.quit()
        thread.join(timeout=60)
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.wait()
    kinds = [json.loads(x)["type"] for x in lines]
    assert kinds[:2] == ["start", "end"] and result["summary"].ended == "stopped"
    assert result["summary"].connections >= 2
