"""``stmil export-model``: the feature extractor (and a run's scorer) as ONNX graphs in a folder
(or, ``--format openvino``, as OpenVINO IR converted from them by ``openvino.convert_model``).

An export folder holds ``features.onnx``, ``scorer.onnx`` (with ``--model RUN``) and
``manifest.json`` (:mod:`stmil.deploy.manifest`), committed as one unit through the folder's
ledger (:mod:`stmil.ownership`): a file there that stmil did not write is refused, never
replaced. Each graph is checked with ``onnx.checker`` (full check: strict shape inference,
whose output shapes must be the manifest's) and run once with ONNX Runtime against PyTorch
before anything is written: features of a random clip, scores of random features; the errors
measured are recorded in the manifest (``checked``), and an fp32 graph off by more than
:data:`FEATURES_TOL` / :data:`SCORES_TOL` is refused. An OpenVINO export converts those checked
ONNX graphs (:func:`to_openvino`: the ONNX graph is stmil's own lowering, so one lowering serves
both runtimes) and checks the IR the same way, run by OpenVINO's CPU plugin in float32.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stmil import __version__
from stmil.atomic import check_writable
from stmil.cuboids import pool_cuboids
from stmil.deploy.builder import BATCH, OPSET
from stmil.deploy.graphs import features_graph, scorer_graph
from stmil.deploy.manifest import (
    FEATURES_FILE,
    FORMAT,
    MANIFEST,
    SCORER_FILE,
    VERSION,
    ExportManifest,
    preprocess,
    read_manifest,
)
from stmil.deploy.quantize import calibration_clips, quantize_features
from stmil.deploy.runtime import OpenVinoSession, require_openvino
from stmil.deploy.settings import ModelFormat
from stmil.errors import ConfigError, ModelError, StmilError
from stmil.features.i3d import endpoint_channels
from stmil.features.motion import DECIMALS, MOTION, motion_energy
from stmil.features.pipeline_config import MAX_CLIP, ExtractorSettings, ExtractSettings
from stmil.features.weights import KINETICS400_RGB, load_i3d
from stmil.mil.bags import l2_normalise
from stmil.mil.detector import Detector
from stmil.mil.run import MODEL
from stmil.ownership import check_can_write, commit, prune, sha256_of
from stmil.settings import Settings, require, setting, setting_like

log = logging.getLogger(__name__)

#: Largest relative L2 error of fp32 features (ONNX Runtime vs PyTorch) an export accepts.
FEATURES_TOL = 1e-4
#: Largest absolute difference of fp32 scores (ONNX Runtime vs the run's Detector) accepted,
#: for a run whose memory gate is well conditioned (see :func:`scores_tolerance`).
SCORES_TOL = 1e-5
#: Rounding error of a float32 cosine similarity near 1: four units in the last place of 1.0.
SIMILARITY_EPS = 4 * 2.0 ** -23
EXTRA = "pip install 'stmil[onnx]'"


def require_onnx() -> tuple[Any, Any]:
    """The ``onnx`` and ``onnxruntime`` modules; :class:`StmilError` naming the extra when
    either is missing."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise StmilError(f"exporting and running exported models needs the onnx extra "
                         f"({e.name} is missing): {EXTRA}") from None
    return onnx, onnxruntime


@dataclass(frozen=True)
class ClipSettings(Settings):
    """What the feature graph is built for and how a runtime cuts clips: from the run with
    ``--model``, else these defaults (``stmil extract``'s)."""

    endpoint: str = setting("Mixed_4e", "I3D endpoint")
    grid: int = setting_like(ExtractorSettings, "grid", 7)
    size: int = setting_like(ExtractSettings, "size", 224)
    clip_len: int = setting(16, "frames per clip (motion energy needs two)", lo=2, hi=MAX_CLIP)
    stride: int = setting_like(ExtractSettings, "stride", 16)
    fps: float | None = setting_like(ExtractSettings, "fps", None)
    tail: str = setting_like(ExtractSettings, "tail", "drop")
    #: the settings a run recorded (:meth:`of_run`, a cached export for ``watch`` / ``score``):
    #: reproduced as they are, even a grid that earlier versions let exceed the feature map
    recorded: bool = field(default=False, compare=False)

    def rules(self) -> None:
        require(not (self.endpoint == "Logits" or self.endpoint.startswith("import:")),
                f"cannot export {{endpoint}} {self.endpoint!r}: cuboid features need an I3D "
                "feature-map endpoint", "endpoint")
        endpoint_channels(self.endpoint)  # ConfigError naming the choices
        if not self.recorded:  # new features: extract's map rule
            ExtractSettings(size=self.size).check_grid(self.grid, self.endpoint)

    @classmethod
    def of_run(cls, detector: Detector) -> ClipSettings:
        c = detector.config
        return cls(c.endpoint, c.feature_grid, c.size, c.clip_len, c.stride,
                   c.recorded.get("resample_fps"), c.tail, recorded=True)


def export_model(out: Path | str, run: Path | str | None = None, format: str = "onnx",
                 precision: str = "fp32", settings: ClipSettings | None = None,
                 calibration: Sequence[Path | str] | None = None) -> ExportManifest:
    """Export the feature extractor, and with ``run`` its scorer, into the folder ``out``.

    ``settings`` (only without ``run``: a run brings its own) choose the endpoint, grid and
    clip geometry. ``precision="int8"`` (OpenVINO only) quantises the feature graph on clips
    of the ``calibration`` videos (:mod:`stmil.deploy.quantize`). Returns the manifest
    written. :class:`ConfigError` for a bad setting, :class:`~stmil.errors.OutputError` for a
    file in ``out`` that is not stmil's, :class:`ModelError` for a run that cannot be exported
    or a graph that does not match PyTorch.
    """
    graph_precision = ModelFormat(format, precision, None if calibration is None
                                  else list(calibration)).graph_precision
    detector = None
    if run is not None:
        if settings is not None:
            raise ConfigError("a run brings its own clip settings: give --model or the "
                              "settings, not both")
        detector = Detector.load(run)
        detector.check_scores_video()  # imported features: no network computes them
        settings = ClipSettings.of_run(detector)
    s = settings or ClipSettings()
    onnx, ort = require_onnx()
    out = check_writable(out)
    names = [FEATURES_FILE] + ([SCORER_FILE] if detector else [])
    if format == "openvino":
        names = [n for name in names for n in _ir_names(name)]
    check_can_write(out, [*names, MANIFEST])

    model = load_i3d(s.endpoint)
    feats = features_graph(model, s.grid, s.clip_len, s.size, graph_precision,
                           {"stmil_version": __version__, "weights_sha256":
                            KINETICS400_RGB.sha256})
    n, c = s.grid * s.grid, endpoint_channels(s.endpoint)
    feats_io = ({"clips": [BATCH, 3, s.clip_len, s.size, s.size]},
                {"features": [BATCH, n, c], "motion": [BATCH, n]})
    feats_bytes = _checked(onnx, feats, *feats_io, FEATURES_FILE)
    checked = {"features_rel_l2": _check_features(_session(ort, feats_bytes), model, s)}
    if graph_precision == "fp32" and not checked["features_rel_l2"] <= FEATURES_TOL:
        raise ModelError(f"the exported feature graph differs from PyTorch by relative L2 "
                         f"{checked['features_rel_l2']:.2e} (> {FEATURES_TOL:g}); please "
                         "report this")
    blobs = {FEATURES_FILE: feats_bytes}
    scorer_entry = None
    if detector is not None:
        blobs[SCORER_FILE], scorer_entry = _scorer(onnx, ort, detector, Path(run), n, c, checked)
    features_entry = _entry(FEATURES_FILE, feats_bytes, *feats_io)
    if format == "openvino":
        quantize = None if calibration is None else _int8(calibration, s, model, checked)
        blobs, features_entry, scorer_entry = to_openvino(
            blobs, features_entry, scorer_entry, precision, checked,
            lambda session: _check_features(session, model, s),
            lambda session: _check_scorer(session, detector, n, c), quantize)
    data = {
        "format": FORMAT, "version": VERSION, "stmil_version": __version__, "opset": OPSET,
        "graph_format": format, "precision": precision,
        "clips": {"clip_len": s.clip_len, "stride": s.stride, "fps": s.fps, "tail": s.tail},
        "preprocess": preprocess(s.size),
        "features": features_entry | {
            "endpoint": s.endpoint, "grid": s.grid, "channels": c, "motion_rule": MOTION,
            "motion_decimals": DECIMALS,
            "weights": {"name": KINETICS400_RGB.name, "sha256": KINETICS400_RGB.sha256}},
        "scorer": scorer_entry,
        "checked": checked,
    }
    manifest = ExportManifest(out, data)
    writes: list[tuple[Path, Callable[[Path], None]]] = [
        (out / name, _writer(blob)) for name, blob in blobs.items()]
    text = manifest.text()
    commit(out, [*writes, (out / MANIFEST, lambda t: t.write_text(text, encoding="utf-8"))],
           "export-model")
    # graphs of an earlier export (a scorer, the other format) would not match this manifest
    prune(out, [name for name in GRAPH_FILES if name not in blobs])
    return read_manifest(out)


def _int8(videos: Sequence[Path | str], s: ClipSettings, model: torch.nn.Module,
          checked: dict) -> Callable[[bytes, bytes], tuple[bytes, bytes]]:
    """The quantiser :func:`to_openvino` applies to the feature IR, on clips of ``videos``
    (decoded now, so a bad video fails before the conversion)."""
    clips = calibration_clips(videos, s)
    return lambda xml, bin_: quantize_features(xml, bin_, clips, model, s.grid, checked)


def _scorer(onnx: Any, ort: Any, detector: Detector, run: Path, n: int, c: int,
            checked: dict) -> tuple[bytes, dict[str, Any]]:
    """The run's scorer graph, checked (``checked``: ``scores_max_abs``, ``scores_tol``), and
    its manifest entry."""
    inputs = {"features": [BATCH, n, c]} | (
        {"motion": [BATCH, n]} if detector.config.motion == "gate" else {})
    scorer = scorer_graph(detector, n, {"stmil_version": __version__})
    blob = _checked(onnx, scorer, inputs, {"maps": [BATCH, n]}, SCORER_FILE)
    checked["scores_max_abs"] = _check_scorer(_session(ort, blob), detector, n, c)
    checked["scores_tol"] = scores_tolerance(detector)
    if not checked["scores_max_abs"] <= checked["scores_tol"]:
        raise ModelError(f"the exported scorer differs from the run's by "
                         f"{checked['scores_max_abs']:.2e} (> {checked['scores_tol']:.1e})"
                         "; please report this")
    return blob, _entry(SCORER_FILE, blob, inputs, {"maps": [BATCH, n]}) | {
        "run": str(run.resolve()), "model_sha256": sha256_of(run / MODEL),
        "config": dict(detector.config.recorded)}


def _ir_names(onnx_name: str) -> tuple[str, str]:
    """The OpenVINO IR files of an ONNX graph file: ``features.onnx`` -> ``features.xml``,
    ``features.bin``."""
    stem = Path(onnx_name).stem
    return f"{stem}.xml", f"{stem}.bin"


#: Every graph file an export may hold (what a new export removes when it no longer makes it).
GRAPH_FILES = (FEATURES_FILE, SCORER_FILE, *_ir_names(FEATURES_FILE), *_ir_names(SCORER_FILE))


def to_openvino(blobs: dict[str, bytes], features_entry: dict, scorer_entry: dict | None,
                precision: str, checked: dict, check_features: Callable[[Any], float],
                check_scorer: Callable[[Any], float],
                quantize: Callable[[bytes, bytes], tuple[bytes, bytes]] | None = None
                ) -> tuple[dict[str, bytes], dict, dict | None]:
    """The checked ONNX graphs ``blobs`` as OpenVINO IR (``openvino.convert_model``, then
    ``save_model``: weights kept fp32, or compressed to fp16 for ``precision`` fp16), each run
    once by OpenVINO and checked like the ONNX graphs (``checked``: ``openvino_features_rel_l2``,
    ``openvino_scores_max_abs``; fp32 features over :data:`FEATURES_TOL` or scores over the
    tolerance are refused). ``quantize``: applied to the feature IR (``--precision int8``),
    which is then measured by it, not by ``check_features``. Returns the IR blobs and the two
    manifest entries."""
    ov = require_openvino()
    out: dict[str, bytes] = {}
    entries = {FEATURES_FILE: features_entry, SCORER_FILE: scorer_entry}
    with tempfile.TemporaryDirectory() as tmp:
        for name, blob in blobs.items():
            src, (xml, bin_) = Path(tmp) / name, _ir_names(name)
            src.write_bytes(blob)
            ov.save_model(ov.convert_model(str(src)), str(Path(tmp) / xml),
                          compress_to_fp16=precision == "fp16")
            out[xml], out[bin_] = (Path(tmp) / xml).read_bytes(), (Path(tmp) / bin_).read_bytes()
            if quantize is not None and name == FEATURES_FILE:
                out[xml], out[bin_] = quantize(out[xml], out[bin_])
                (Path(tmp) / xml).write_bytes(out[xml])
                (Path(tmp) / bin_).write_bytes(out[bin_])
            entry = entries[name]
            session = OpenVinoSession(Path(tmp) / xml, list(entry["outputs"]))
            if name == FEATURES_FILE:
                err = checked["openvino_features_rel_l2"] = check_features(session)
                bad = precision == "fp32" and not err <= FEATURES_TOL
                if precision == "int8":  # measured on the calibration clips instead
                    del checked["openvino_features_rel_l2"]
            else:
                err = checked["openvino_scores_max_abs"] = check_scorer(session)
                bad = not err <= checked["scores_tol"]
            if bad:
                raise ModelError(f"the OpenVINO {xml} differs from PyTorch by {err:.2e}; "
                                 "please report this")
            entries[name] = _entry(xml, out[xml], entry["inputs"], entry["outputs"]) | {
                k: v for k, v in entry.items() if k not in _ENTRY_KEYS} | {"bin": {
                    "file": bin_, "bytes": len(out[bin_]),
                    "sha256": hashlib.sha256(out[bin_]).hexdigest()}}
    return out, entries[FEATURES_FILE], entries[SCORER_FILE]


_ENTRY_KEYS = ("file", "bytes", "sha256", "inputs", "outputs")


def scores_tolerance(detector: Detector) -> float:
    """How far two correct float32 implementations of the run's scoring may differ:
    :data:`SCORES_TOL`, or more for a memory gate whose scale ``[lo, hi]`` is narrow. The gate
    divides a novelty (one minus a float32 cosine similarity, off by up to
    :data:`SIMILARITY_EPS`) by ``hi - lo``, so its rounding error is
    ``SIMILARITY_EPS / (hi - lo)``: PyTorch's own float32 scores are that far from exact
    arithmetic (measured: 5.8e-5 against float64 for a gate with ``hi - lo = 1.4e-4``)."""
    gate = detector.scorer.gate
    if gate is None:
        return SCORES_TOL
    lo, hi = (float(v) for v in gate.scale)
    tol = max(SCORES_TOL, SIMILARITY_EPS / (hi - lo))
    if tol > SCORES_TOL:
        log.warning(f"the run's memory gate has a narrow scale (hi - lo = {hi - lo:.1e}): its "
                    f"scores carry float32 rounding errors up to {tol:.1e} in any runtime, "
                    "PyTorch's included")
    return tol


def _writer(blob: bytes) -> Callable[[Path], None]:
    return lambda t: t.write_bytes(blob)


def _entry(name: str, blob: bytes, inputs: dict, outputs: dict) -> dict[str, Any]:
    return {"file": name, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
            "inputs": inputs, "outputs": outputs}


def _checked(onnx: Any, model: Any, inputs: dict[str, list], outputs: dict[str, list],
             name: str) -> bytes:
    """``model`` serialised, after ``onnx.checker``'s full check; its inferred input and
    output shapes must be ``inputs`` and ``outputs`` (:class:`ModelError` if not)."""
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ModelError(f"{name}: the exported graph is not valid ONNX ({e}); please report "
                         "this") from None
    got = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
           for v in [*inferred.graph.input, *inferred.graph.output]}
    want = inputs | outputs
    if got != want:
        raise ModelError(f"{name}: shapes {got} are not the expected {want}; please report "
                         "this")
    return model.SerializeToString()


def _session(ort: Any, blob: bytes) -> Any:
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"])


@torch.no_grad()
def _check_features(session: Any, model: torch.nn.Module, s: ClipSettings) -> float:
    """Relative L2 error of the features ``session`` (the graph's ONNX Runtime session, or an
    OpenVINO one) gives of one random clip against PyTorch fp32; its motion energy must match
    :func:`~stmil.features.motion.motion_energy`."""
    clip = torch.rand(1, 3, s.clip_len, s.size, s.size,
                      generator=torch.Generator().manual_seed(0)) * 2 - 1
    feats, motion = session.run(None, {"clips": clip.numpy()})
    ref = pool_cuboids(model(clip), s.grid).numpy()
    if not np.allclose(np.round(motion.astype(np.float64), DECIMALS),
                       motion_energy(clip, s.grid), atol=2 * 10.0 ** -DECIMALS):
        raise ModelError("the exported motion energy differs from stmil's; please report this")
    return float(np.linalg.norm(feats - ref) / np.linalg.norm(ref))


def _check_scorer(session: Any, detector: Detector, n: int, c: int) -> float:
    """Largest absolute difference of the scores ``session`` gives of random features (and
    motion) from :meth:`Detector.maps`. With a memory gate, the features run from bank entries to
    random directions (:func:`gate_probe`), so that the gate takes every value in ``[0, 1]``."""
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(4, n, c))).astype(np.float32)
    gate = detector.scorer.gate
    if gate is not None:
        x = gate_probe(gate.bank.numpy(), x, rng)
    motion = rng.uniform(0, 2 * (detector.config.motion_scale or 1), size=(4, n))
    motion = np.round(motion, DECIMALS)
    feeds = {"features": x} | (
        {"motion": motion.astype(np.float32)} if detector.config.motion == "gate" else {})
    got = session.run(None, feeds)[0]
    want = detector.maps(x, motion)
    return float(np.abs(got - want).max())


def gate_probe(bank: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Features ``x`` ``(..., C)`` moved towards random entries of ``bank`` ``(M, C)``: instance
    ``k`` of ``K`` is ``(1 - a) * entry + a * x_k / |x_k|`` with ``a = k / (K - 1)``, from an
    entry itself (novelty 0) to a random direction (novelty far above a normal instance's)."""
    flat = l2_normalise(x.reshape(-1, x.shape[-1]))
    a = np.linspace(0.0, 1.0, len(flat), dtype=np.float32)[:, None]
    rng.shuffle(a)
    near = bank[rng.integers(len(bank), size=len(flat))]
    return ((1 - a) * near + a * flat).astype(np.float32).reshape(x.shape)
