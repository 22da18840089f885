"""stmil serve: every API route and page with Starlette's test client, path safety, read-only
serving, one-line CLI errors, and one headless-Chromium test of the video page.

The served folder is built once: a planted dataset (tests/planted.py) with tiny H.264 videos
in ``data/videos``, its features, a briefly trained and evaluated run ``runs/a``, a copy of it
with a malformed ``metrics.json`` (``runs/broken``), a folder of ``stmil score`` outputs (one
good, one malformed) and links and files that must never be served.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from html.parser import HTMLParser

import av
import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from stmil.evaluation.evaluate import evaluate  # noqa: E402
from stmil.features.store import load_features, meta_clip_ranges  # noqa: E402
from stmil.live.incidents import Incident, incident_line  # noqa: E402
from stmil.mil.detector import Detector  # noqa: E402
from stmil.mil.train import train  # noqa: E402
from stmil.score import score_features, write_scores  # noqa: E402
from stmil.serve.app import create_app, serve  # noqa: E402
from stmil.serve.paths import media_file, shown  # noqa: E402
from tests.conftest import (  # noqa: E402
    assert_one_line_error,
    ramp_frames,
    require_vtest,
    run_cli,
    write_video,
)
from tests.mp4 import assert_browser_mp4  # noqa: E402
from tests.planted import CLIP, make_planted  # noqa: E402
from tests.test_score import direct_maps  # noqa: E402

FAST = dict(iterations=6, hidden=16, mid=4, n_segments=4, device="cpu", progress=False,
            gate="none")
N_CLIPS = 6
ANOMALOUS, NORMAL = "FightingTest000_x264", "Normal_Videos_Test001_x264"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("serve")
    root, outside = base / "DIR", base / "outside"
    data, feats, run = root / "data", root / "features", root / "runs" / "a"
    truth = make_planted(data, feats, n_train=4, n_test=2, n_clips=N_CLIPS)
    (data / "videos").mkdir()
    rng = np.random.default_rng(0)
    for vid in (ANOMALOUS, NORMAL):
        frames = rng.integers(0, 255, size=(N_CLIPS * CLIP, 224, 224, 3), dtype=np.uint8)
        write_video(data / "videos" / f"{vid}.mp4", frames, fps=30, codec="libx264")
    train(data, feats, run, **FAST)
    evaluate(data, feats, run)
    shutil.copytree(run, root / "runs" / "broken")
    (root / "runs" / "broken" / "metrics.json").write_text("{not json", encoding="utf-8")
    (root / "runs" / "broken" / "calibration.json").write_text("[]", encoding="utf-8")
    features, meta = load_features(feats, ANOMALOUS)
    write_scores(root / "scores", ANOMALOUS,
                 score_features(Detector.load(run), features, meta, meta_clip_ranges(meta)))
    (root / "scores" / "Broken.scores.json").write_text('{"n_frames": 3}', encoding="utf-8")
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"secret")
    (data / "videos" / "link.mp4").symlink_to(outside / "secret.mp4")
    (root / "outside").symlink_to(outside, target_is_directory=True)
    (root / ".hidden.mp4").write_bytes(b"hidden")
    write_incidents_files(root, data / "videos")
    return {"root": root, "run": run, "feats": feats, "truth": truth}


#: The incident of the events file: (video, start, end, peak frame).
EVENT_INCIDENT = (ANOMALOUS, 40, 64, 50)


def _incident(source: str, start: int, end: int, peak: int, id_: int = 1) -> Incident:
    return Incident(id=id_, source=source, fps=30.0, start_frame=start, end_frame=end,
                    start_time=start / 30, end_time=end / 30, peak_score=0.9, peak_frame=peak,
                    peak_time=peak / 30, mean_score=0.8, box=[10.0, 20.0, 60.0, 90.0],
                    reason="scores fell")


def write_incidents_files(root, videos) -> None:
    """``events/incidents.jsonl`` as stmil events writes it (one ``incident`` line, of the
    anomalous video's file) and a watch log (``start`` and ``end`` of the normal one, from its
    scores file's name); ``events/bad.jsonl`` whose second line is not JSON."""
    vid, start, end, peak = EVENT_INCIDENT
    (root / "events").mkdir()
    good = _incident(str(videos / f"{vid}.mp4"), start, end, peak)
    other = _incident(f"elsewhere/{NORMAL}.scores.json", 10, 20, 12, id_=2)
    lines = [incident_line("incident", good), incident_line("start", other),
             incident_line("end", other)]
    (root / "events" / "incidents.jsonl").write_text("\n".join(lines) + "\n")
    (root / "events" / "bad.jsonl").write_text(lines[0] + "\n{oops\n")


@pytest.fixture(scope="module")
def client(served) -> TestClient:
    return TestClient(create_app(served["root"]), raise_server_exceptions=False)


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


@pytest.mark.parametrize("path", ["/", "/videos", f"/video/{ANOMALOUS}"])
def test_pages_load_only_local_files(client, path):
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    parser = _Refs()
    parser.feed(r.text)
    assert parser.refs and all(ref.startswith("/") and not ref.startswith("//")
                               for ref in parser.refs)
    for ref in parser.refs:  # every script, stylesheet and icon is there
        assert client.get(ref).status_code == 200, ref


def test_summary_names_the_test_set(client):
    s = client.get("/api/summary").json()
    assert s["kind"] == "runs" and s["data"] == "data" and s["features"] == "features"
    assert s["test_set"] == {"videos": 2, "anomalous": 1, "normal": 1}
    assert [(x["name"], x["kind"]) for x in s["sources"]] == [
        ("runs/a", "run"), ("runs/broken", "run"), ("scores", "scores"),
        ("events/bad.jsonl", "events"), ("events/incidents.jsonl", "events")]


def test_runs_show_the_numbers_of_metrics_json(client, served):
    data = client.get("/api/runs").json()
    runs = {r["name"]: r for r in data["runs"]}
    recorded = json.loads((served["run"] / "metrics.json").read_text())["results"]["test"]
    (expected,) = recorded.values()
    (result,) = runs["runs/a"]["results"]
    assert result["split"] == "test" and result["data"] == "data" and result["n_videos"] == 2
    keys = [m["key"] for m in data["metrics"]]
    assert "frame_auc" in keys and all(m["meaning"] for m in data["metrics"])
    assert result["metrics"] == {k: expected.get(k) for k in keys}
    assert runs["runs/a"]["threshold"] == {"value": 0.5, "source": "default"}
    assert runs["runs/a"]["errors"] == []
    # paths inside DIR are shown relative to it, none absolute
    assert runs["runs/a"]["config"]["data"] == "data"
    assert not any(isinstance(v, str) and v.startswith(str(served["root"]))
                   for v in runs["runs/a"]["config"].values())
    # a malformed metrics.json is an error on that run, not a dead server
    cal_err, metrics_err = runs["runs/broken"]["errors"]
    assert "calibration.json" in cal_err and "not a stmil calibration" in cal_err
    assert "metrics.json" in metrics_err and "invalid JSON" in metrics_err
    assert runs["scores"]["n_scored"] == 2


def test_one_run_and_unknown_runs(client):
    assert client.get("/api/runs/runs/a").json()["name"] == "runs/a"
    for bad in ("/api/runs/nope", "/api/runs/runs/%2e%2e/runs/a", "/api/runs/%2e%2e/etc"):
        r = client.get(bad)
        assert r.status_code == 404 and "error" in r.json(), bad


def test_video_list_has_every_test_video_with_its_label(client, served):
    data = client.get("/api/videos").json()
    videos = {v["id"]: v for v in data["videos"]}
    assert set(videos) == {ANOMALOUS, NORMAL, "Broken"}
    assert videos[ANOMALOUS]["label"] == 1 and videos[NORMAL]["label"] == 0
    assert videos["Broken"]["label"] is None
    a = videos[ANOMALOUS]["sources"]["runs/a"]
    maps = direct_maps(served["run"], load_features(served["feats"], ANOMALOUS)[0])
    assert a["peak"] == pytest.approx(maps.max(), abs=1e-4)
    assert 0.0 <= a["ap"] <= 1.0 and a["events"] == 1 and a["missed"] in (0, 1)
    assert videos[NORMAL]["sources"]["runs/a"]["ap"] is None  # no positive frame
    assert "Broken.scores.json" in videos["Broken"]["sources"]["scores"]["error"]


def test_video_detail_scores_maps_and_truth(client, served):
    d = client.get(f"/api/videos/{ANOMALOUS}").json()
    assert d["n_frames"] == N_CLIPS * CLIP and d["fps"] == 30.0
    assert d["media"] == f"/media/data/videos/{ANOMALOUS}.mp4" and d["media_note"] == ""
    cuboid, s, e = served["truth"][ANOMALOUS]
    assert d["intervals"] == [[s * CLIP, e * CLIP]]
    assert sorted(map(int, d["gt_boxes"])) == list(range(s * CLIP, e * CLIP))
    by_name = {v["name"]: v for v in d["sources"]}
    run, scores = by_name["runs/a"], by_name["scores"]
    maps = direct_maps(served["run"], load_features(served["feats"], ANOMALOUS)[0])
    np.testing.assert_allclose(run["clip_maps"], maps, atol=1e-4)
    expected = np.repeat(maps.max(axis=1), CLIP)  # clips of 16 frames, one after another
    np.testing.assert_allclose(run["frame_scores"], expected, atol=1e-4)
    assert run["clip_ranges"] == [[k * CLIP, (k + 1) * CLIP] for k in range(N_CLIPS)]
    cells = np.array(run["cells"])
    assert cells.shape == (49, 4) and cells[-1].tolist() == pytest.approx([192, 192, 224, 224])
    for k, box in enumerate(run["clip_boxes"]):
        assert box == pytest.approx(cells[maps[k].argmax()].tolist(), abs=0.01)
    # a run with a malformed calibration.json keeps its curve, without threshold or incidents
    broken = by_name["runs/broken"]
    assert broken["frame_scores"] == run["frame_scores"] and broken["threshold"] is None
    assert "calibration.json" in broken["warning"] and run["warning"] is None
    # the stmil score output of the same run gives the same curve
    np.testing.assert_allclose(scores["frame_scores"], run["frame_scores"], atol=1e-4)
    assert scores["threshold"] is None and scores["incidents"] == []


def test_incidents_files_on_the_video_page_and_in_the_table(client, served):
    """An incidents file (stmil events / watch --out) gives each video its incidents, matched
    to the annotated events; a malformed one is an error naming its line, not a dead page."""
    vid, start, end, peak = EVENT_INCIDENT
    d = client.get(f"/api/videos/{vid}").json()
    by_name = {v["name"]: v for v in d["sources"]}
    events = by_name["events/incidents.jsonl"]
    assert events["error"] is None and "frame_scores" not in events
    assert [(i["start_frame"], i["end_frame"], i["peak_frame"]) for i in events["incidents"]] \
        == [(start, end, peak)]
    assert d["n_frames"] == N_CLIPS * CLIP  # from the scored sources
    bad = by_name["events/bad.jsonl"]
    assert bad["error"].endswith("bad.jsonl:2: not JSON")
    normal = client.get(f"/api/videos/{NORMAL}").json()
    (inc,) = {v["name"]: v for v in normal["sources"]}["events/incidents.jsonl"]["incidents"]
    assert (inc["start_frame"], inc["end_frame"]) == (10, 20)  # the watch log's end line
    table = {v["id"]: v["sources"] for v in client.get("/api/videos").json()["videos"]}
    s, e = served["truth"][vid][1:]
    overlaps = start < e * CLIP and s * CLIP < end
    row = table[vid]["events/incidents.jsonl"]
    assert row["incidents"] == 1 and row["events"] == 1 and row["peak"] is None
    assert row["false"] == (0 if overlaps else 1)
    assert table[NORMAL]["events/incidents.jsonl"]["incidents"] == 1
    assert "not JSON" in table[vid]["events/bad.jsonl"]["error"]
    runs = [r["name"] for r in client.get("/api/runs").json()["runs"]]
    assert not any(n.startswith("events/") for n in runs)


def test_unknown_and_malformed_videos(client):
    r = client.get("/api/videos/nope")
    assert r.status_code == 404 and r.json() == {"error": "no video 'nope' in this folder"}
    d = client.get("/api/videos/Broken").json()
    (src,) = d["sources"]
    assert "not a stmil scores file" in src["error"] and d["media"] is None


def short_vtest(dest, n_packets: int = 30):
    """The first ``n_packets`` frames of OpenCV's vtest.avi (MS-MPEG4 in AVI, 768 x 576,
    10 fps), remuxed without re-encoding: real footage browsers cannot play."""
    src_path = require_vtest()
    with av.open(str(src_path)) as src, av.open(str(dest), "w", format="avi") as out:
        stream = src.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for k, packet in enumerate(src.demux(stream)):
            if k >= n_packets:
                break
            if packet.dts is None:
                continue
            packet.stream = copy
            out.mux(packet)
    return dest


@pytest.fixture(scope="module")
def avi_dir(served, tmp_path_factory):
    """A folder of scores files: ``Clip`` is a short vtest.avi inside it, ``Far`` a video
    outside it."""
    root = tmp_path_factory.mktemp("avi")
    good = json.loads((served["root"] / "scores" / f"{ANOMALOUS}.scores.json").read_text())
    short_vtest(root / "clip.avi")
    for vid, source in (("Clip", root / "clip.avi"),
                        ("Far", served["root"] / "data" / "videos" / f"{ANOMALOUS}.mp4")):
        (root / f"{vid}.scores.json").write_text(json.dumps(good | {"source": str(source)}))
    return root


def _tree(root) -> dict:
    return {p.relative_to(root).as_posix(): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in root.rglob("*")}


def test_a_video_browsers_cannot_play_gets_a_proxy_made_once(avi_dir):
    """A scores folder alone: the video is its ``source``. The AVI is offered through an H.264
    copy made on the first request under .stmil/proxies, recorded in that folder's ledger, and
    not made again; a source outside DIR is not served."""
    client = TestClient(create_app(avi_dir))
    assert client.get("/api/summary").json()["kind"] == "scores"
    before = _tree(avi_dir)
    clip = client.get("/api/videos/Clip").json()
    assert clip["media"] == "/proxy/clip.avi" and "H.264 copy" in clip["media_note"]
    assert clip["n_frames"] == N_CLIPS * CLIP and clip["sources"][0]["name"] == "."
    assert _tree(avi_dir) == before  # the page's data writes nothing
    far = client.get("/api/videos/Far").json()
    assert far["media"] is None and "outside the served folder" in far["media_note"]

    r = client.get("/proxy/clip.avi")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    (made,) = (avi_dir / ".stmil" / "proxies").glob("*.mp4")
    assert r.content == made.read_bytes()
    assert_browser_mp4(made)
    with av.open(str(made)) as c:  # every frame, at the source's rate and size
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height) == (768, 576)
        assert float(s.average_rate) == 10.0
        assert sum(1 for _ in c.decode(s)) == 30
    ledger = json.loads((made.parent / ".stmil" / "ledger.json").read_text())
    assert ledger["files"][made.name]["command"] == "serve"
    changed = set(_tree(avi_dir)) - set(before)
    assert changed and all(p == ".stmil" or p.startswith(".stmil/") for p in changed), changed
    stamp = made.stat().st_mtime_ns
    r = client.get("/proxy/clip.avi", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == made.read_bytes()[:100]
    assert made.stat().st_mtime_ns == stamp  # made once
    for bad in ("/proxy/Clip.scores.json", "/proxy/../x.avi", "/proxy/missing.avi",
                f"/proxy/{made.relative_to(avi_dir).as_posix()}"):
        assert client.get(bad).status_code == 404, bad


def test_mpeg_ts_and_odd_sizes_are_transcoded_frame_for_frame(tmp_path):
    """MPEG-TS (MPEG-2 video, 25 fps) and a lossless AVI of odd size (65 x 49; yuv420p needs
    even sizes: the last column and row go): the proxy has every frame, in order, at the
    source's rate."""
    from stmil.serve.proxy import transcode

    frames = ramp_frames(20, 50, 66)
    ts = tmp_path / "cam.ts"
    with av.open(str(ts), "w", format="mpegts") as out:
        s = out.add_stream("mpeg2video", rate=25)
        s.width, s.height, s.pix_fmt, s.bit_rate = 66, 50, "yuv420p", 8_000_000
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode())
    odd = write_video(tmp_path / "odd.avi", frames[:, :49, :65], fps=30)
    for src, fps, size in ((ts, 25.0, (50, 66)), (odd, 30.0, (48, 64))):
        out = tmp_path / f"{src.stem}.mp4"
        assert transcode(src, out) == 20
        assert_browser_mp4(out)
        with av.open(str(out)) as c:
            stream = c.streams.video[0]
            assert float(stream.average_rate) == fps
            got = [f.to_ndarray(format="rgb24").astype(float) for f in c.decode(stream)]
        assert len(got) == 20 and got[0].shape == (*size, 3)
        # the ramp's level (+4 a frame) survives the codecs: every frame, in order
        want = [f[: size[0], : size[1]].mean() for f in frames]
        np.testing.assert_allclose([g.mean() for g in got], want, atol=3.0)


def test_a_user_file_where_the_proxy_goes_is_left_alone(avi_dir, tmp_path):
    """A file of the proxy's name that the ledger does not prove stmil's: not replaced, no
    proxy made, and the page says why."""
    root = tmp_path / "dir"
    shutil.copytree(avi_dir, root, ignore=shutil.ignore_patterns(".stmil"))
    scores = root / "Clip.scores.json"
    scores.write_text(json.dumps(json.loads(scores.read_text()) | {
        "source": str(root / "clip.avi")}))
    client = TestClient(create_app(root))
    proxies = root / ".stmil" / "proxies"
    proxies.mkdir(parents=True)
    from stmil.serve.proxy import proxy_path

    mine = proxy_path(root.resolve(), (root / "clip.avi").resolve())
    mine.write_bytes(b"the user's own file")
    clip = client.get("/api/videos/Clip").json()
    assert clip["media"] is None and "cannot be made" in clip["media_note"]
    assert mine.name in clip["media_note"]
    r = client.get("/proxy/clip.avi")
    assert r.status_code == 409 and mine.name in r.json()["error"]
    assert mine.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in proxies.iterdir()) == [mine.name]


def test_media_whole_and_ranges(client, served):
    path = served["root"] / "data" / "videos" / f"{ANOMALOUS}.mp4"
    body = path.read_bytes()
    r = client.get(f"/media/data/videos/{ANOMALOUS}.mp4")
    assert r.status_code == 200 and r.content == body
    assert r.headers["content-type"] == "video/mp4" and r.headers["accept-ranges"] == "bytes"
    r = client.get(f"/media/data/videos/{ANOMALOUS}.mp4", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == body[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(body)}"
    assert client.head(f"/media/data/videos/{ANOMALOUS}.mp4").status_code == 200


def test_ranges_of_a_large_video(tmp_path):
    """A 5 GiB video (a sparse file: no disk used) seeks by ranges: its last bytes come back
    alone (206, Content-Range with the whole size), as a suffix range and an open range; a
    range past the end is 416."""
    size = 5 * 2**30
    with open(tmp_path / "big.mp4", "wb") as f:
        f.truncate(size)
        f.seek(size - 4)
        f.write(b"tail")
    client = TestClient(create_app(tmp_path))
    for asked, first in ((f"bytes={size - 20}-{size - 1}", size - 20), ("bytes=-4", size - 4),
                         (f"bytes={size - 4}-", size - 4)):
        r = client.get("/media/big.mp4", headers={"Range": asked})
        assert r.status_code == 206, asked
        assert r.headers["content-range"] == f"bytes {first}-{size - 1}/{size}"
        assert r.content == bytes(size - 4 - first) + b"tail"
    r = client.get("/media/big.mp4", headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize("path", [
    "/media/%2e%2e/outside/secret.mp4",       # .. out of DIR
    "/media/data/%2e%2e/%2e%2e/outside/secret.mp4",
    "/media/data/videos/link.mp4",            # a symlink pointing out of DIR
    "/media/outside/secret.mp4",              # a folder symlink out of DIR
    "/media//etc/passwd",                     # absolute
    "/media/%2Fetc%2Fpasswd",
    "/media/data\\videos\\x.mp4",
    "/media/.hidden.mp4",                     # hidden
    "/media/runs/a/config.yaml",              # not a media file
    "/media/data/videos/missing.mp4",         # missing
    "/static/../runs.html",
    "/api/nothing",
])
def test_nothing_outside_dir_is_served(client, path):
    r = client.get(path)
    assert r.status_code == 404, path
    assert "error" in r.json() and "Traceback" not in r.text and "secret" not in r.text


def test_media_file_rules(served, tmp_path):
    root = served["root"]
    assert media_file(root, f"data/videos/{ANOMALOUS}.mp4") is not None
    for rel in ("", "/etc/passwd", "data/../data/videos/x.mp4", "c:/x.mp4", "a\x00.mp4",
                "data/videos/link.mp4", "outside/secret.mp4"):
        assert media_file(root, rel) is None, rel
    assert shown(root, str(root / "runs" / "a")) == "runs/a"
    assert shown(root, "/home/someone/demo-out/data") == ".../demo-out/data"
    assert shown(root, 0.5) == 0.5


def test_serving_writes_nothing(served):
    """Every page and route of a folder whose videos browsers play: nothing written (the one
    thing serve writes, a proxy, is tested above)."""
    def snapshot() -> dict:
        return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns)
                for p in served["root"].rglob("*")}

    before = snapshot()
    client = TestClient(create_app(served["root"]))
    for path in ("/", "/api/summary", "/api/runs", "/api/videos", f"/api/videos/{ANOMALOUS}",
                 f"/api/videos/{NORMAL}", "/api/videos/Broken", "/api/runs/runs/broken",
                 f"/media/data/videos/{NORMAL}.mp4"):
        assert client.get(path).status_code == 200, path
    assert snapshot() == before


def test_internal_error_is_json_not_a_traceback(served, monkeypatch):
    from stmil.serve.catalog import Catalog

    def boom(self):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(Catalog, "runs", boom)
    r = TestClient(create_app(served["root"]), raise_server_exceptions=False).get("/api/runs")
    assert r.status_code == 500
    assert r.json() == {"error": "internal error: RuntimeError: disk on fire second line"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_errors_are_one_line(capsys, served, tmp_path):
    code, _, err = run_cli(capsys, "serve", tmp_path / "missing")
    assert code == 1
    assert_one_line_error(err, "missing", "no such folder")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(capsys, "serve", served["root"], "--port", port)
    assert code == 1
    assert_one_line_error(err, f"127.0.0.1:{port}", "--port")


def test_other_host_is_warned_about(served, monkeypatch, caplog):
    import uvicorn

    ran = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: ran.append(sockets))
    serve(served["root"], host="0.0.0.0", port=_free_port())
    assert len(ran) == 1 and any("anyone who can reach" in r.getMessage()
                                 for r in caplog.records)
    ran[0][0].close()


# --- a real browser ---------------------------------------------------------------------------


def _browser():
    """A headless Debian chromium through chromium-driver; skip (fail under $CI) without."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        chromium = None
    if not (chromium and driver):
        msg = "needs Debian's chromium and chromium-driver and selenium (make browser)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {msg}", pytrace=False)
        pytest.skip(msg)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required",
                "--mute-audio", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))


@contextlib.contextmanager
def _server(root):
    """``stmil serve root`` on a free port of 127.0.0.1, in a thread: its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(root), host="127.0.0.1",
                                           port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def live_url(served):
    with _server(served["root"]) as url:
        yield url


def _wait(driver, script: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def test_video_page_in_chromium(live_url, served, tmp_path_factory):
    """The video page loads without a console error, plays, draws the heat map where the map is
    hot, and a click on the score curve seeks the video to the clicked frame (within a clip).
    Screenshots of the three pages go to the folder printed below."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    shots = tmp_path_factory.mktemp("serve-screenshots")
    print(f"screenshots: {shots}")
    driver = _browser()
    try:
        for path, name in (("/", "runs"), ("/videos", "videos")):
            driver.get(live_url + path)
            _wait(driver, "return document.querySelector('table tbody tr') !== null")
            driver.save_screenshot(str(shots / f"{name}.png"))
        driver.get(f"{live_url}/video/{ANOMALOUS}?source=runs/a")
        _wait(driver, "return window.stmilPage && window.stmilPage.ready")
        _wait(driver, "return document.getElementById('video').readyState >= 2")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []

        driver.execute_script("document.getElementById('video').play()")
        _wait(driver, "return document.getElementById('video').currentTime > 0.2")
        driver.execute_script("document.getElementById('video').pause()")

        n = N_CLIPS * CLIP
        target = 70
        curve = driver.find_element("id", "curve")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", curve)
        width, height = curve.size["width"], curve.size["height"]
        left, right = 42, width - 10  # the plot's margins in video.js, CSS pixels
        x = left + (right - left) * target / (n - 1)
        ActionChains(driver).move_to_element_with_offset(
            curve, round(x - width / 2), round(height * 0.25)).click().perform()
        time_s = _wait(driver, "const v = document.getElementById('video');"
                               "return !v.seeking && Math.abs(v.currentTime * 30 - 70) < 20"
                               " && v.currentTime")
        assert abs(time_s * 30 - target) <= CLIP
        assert abs(driver.execute_script("return window.stmilPage.frame()") - target) <= CLIP

        # keyboard: right arrow steps one frame
        frame = driver.execute_script("return window.stmilPage.frame()")
        ActionChains(driver).send_keys(Keys.ARROW_RIGHT).perform()
        _wait(driver, f"return window.stmilPage.frame() === {frame + 1}")

        # the heat map is painted on the overlay canvas, more opaque where the map is hotter,
        # and the m key takes it off
        maps = direct_maps(served["run"], load_features(served["feats"], ANOMALOUS)[0])
        row = maps[(frame + 1) // CLIP]
        hot_cell, cold_cell = int(row.argmax()), int(row.argmin())

        def alphas(cells: list[int]) -> list[int]:
            """The overlay's alpha at the centre of each cell of the 7 x 7 grid."""
            return driver.execute_script(
                "const c = document.getElementById('overlay'); const g = c.getContext('2d');"
                "return arguments[0].map((i) => g.getImageData(Math.floor((i % 7 + 0.5) * "
                "c.width / 7), Math.floor((Math.floor(i / 7) + 0.5) * c.height / 7), 1, 1)"
                ".data[3]);", cells)

        hot, cold = alphas([hot_cell, cold_cell])
        assert hot > cold > 0
        ActionChains(driver).send_keys("m").perform()
        deadline = time.monotonic() + 5
        while alphas([hot_cell]) != [0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alphas([hot_cell, cold_cell]) == [0, 0]
        driver.save_screenshot(str(shots / "video.png"))

        # an incident of the incidents file: its button seeks the video to its start
        start = EVENT_INCIDENT[1]
        button = driver.find_element("css selector", f'#incidents button[data-frame="{start}"]')
        assert button.text.startswith("events/incidents.jsonl #1")
        button.click()
        _wait(driver, f"return window.stmilPage.frame() === {start}")
        _wait(driver, "const v = document.getElementById('video');"
                      f"return !v.seeking && Math.floor(v.currentTime * 30) === {start}")
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()


def test_an_avi_plays_through_its_proxy_in_chromium(avi_dir):
    """vtest.avi (cut short) in the video element: the page asks for its proxy, which is made
    on that request, and the video plays (its currentTime advances)."""
    driver = _browser()
    try:
        with _server(avi_dir) as url:
            driver.get(f"{url}/video/Clip")
            _wait(driver, "return window.stmilPage && window.stmilPage.ready")
            assert driver.execute_script("return document.getElementById('video').src") \
                == f"{url}/proxy/clip.avi"
            _wait(driver, "return document.getElementById('video').readyState >= 2", 60)
            driver.execute_script("document.getElementById('video').play()")
            _wait(driver, "return document.getElementById('video').currentTime > 0.3")
            assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
