"""A straightforward PyTorch port of Inception-I3D, kept only as a speed baseline.

This is the kind of port one writes first (and the public ports look like): every unit is a
``Conv3d(bias=False)`` followed by a ``BatchNorm3d`` (eps 1e-3; Sonnet BatchNorm has no scale, so
the affine weight is fixed at 1), each branch of an inception module has its own 1x1
convolution (no fusion), TF "SAME" padding is computed and applied with ``F.pad`` on every
convolution and pooling call (stride-1 layers included), and tensors stay in the default
contiguous layout. :mod:`stmil.features.i3d` is the same network with BatchNorm folded into the
convolutions, the three 1x1 reductions fused, symmetric padding left to the ops and, on CPU,
``channels_last_3d``.

Max pooling pads with zeros, as the public ports do. Every pooled tensor here comes out of a
ReLU (>= 0), so zero padding gives exactly TF's result.

It reads the same converted weights, :func:`stmil.features.weights.load_raw`, and matches
:func:`stmil.features.weights.load_i3d` to about 1e-6 relative. Check::

    STMIL_CACHE=/tmp/stmilcache .venv/bin/python benchmarks/naive_i3d.py --size 64
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stmil.features.i3d import _MIXED, ENDPOINTS, endpoint_channels, mixed_channels
from stmil.features.weights import KINETICS400_RGB, load_i3d, load_raw


def tf_same_pads(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list:
    """``F.pad`` list ``[w0, w1, h0, h1, t0, t1]`` for TF SAME padding of a ``(T, H, W)`` input."""
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


class NaiveUnit3D(nn.Module):
    """F.pad (SAME) -> Conv3d(bias=False) -> BatchNorm3d -> ReLU; or a biased conv (Logits)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, bn: bool = True,
                 relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = (kernel,) * 3, (stride,) * 3, relu
        self.conv = nn.Conv3d(cin, cout, kernel, stride, padding=0, bias=not bn)
        self.bn = nn.BatchNorm3d(cout, eps=KINETICS400_RGB.batchnorm_eps) if bn else None

    def forward(self, x: Tensor) -> Tensor:
        """``(B, cin, T, H, W) -> (B, cout, T', H', W')``."""
        x = F.pad(x, tf_same_pads(tuple(x.shape[2:]), self.kernel, self.stride))
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class NaiveMaxPool(nn.Module):
    """F.pad (SAME, zeros) -> MaxPool3d."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.pool = nn.MaxPool3d(kernel, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.pad(x, tf_same_pads(tuple(x.shape[2:]), self.kernel, self.stride)))


class NaiveInception(nn.Module):
    """Four branches, each with its own convolutions; outputs concatenated on channels."""

    def __init__(self, cin: int, widths: tuple[int, ...]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.b0 = NaiveUnit3D(cin, b0, 1)
        self.b1a, self.b1b = NaiveUnit3D(cin, b1a, 1), NaiveUnit3D(b1a, b1b, 3)
        self.b2a, self.b2b = NaiveUnit3D(cin, b2a, 1), NaiveUnit3D(b2a, b2b, 3)
        self.b3pool, self.b3 = NaiveMaxPool((3, 3, 3), (1, 1, 1)), NaiveUnit3D(cin, b3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3(self.b3pool(x))], dim=1)


class NaiveI3d(nn.Module):
    """Inception-I3D RGB up to ``endpoint``: ``(B, 3, T, H, W) -> (B, C, T', H', W')``."""

    def __init__(self, endpoint: str = "Mixed_4e", num_classes: int = 400):
        super().__init__()
        endpoint_channels(endpoint)  # validates the name
        layers: dict[str, nn.Module] = {
            "Conv3d_1a_7x7": NaiveUnit3D(3, 64, 7, stride=2),
            "MaxPool3d_2a_3x3": NaiveMaxPool((1, 3, 3), (1, 2, 2)),
            "Conv3d_2b_1x1": NaiveUnit3D(64, 64, 1),
            "Conv3d_2c_3x3": NaiveUnit3D(64, 192, 3),
            "MaxPool3d_3a_3x3": NaiveMaxPool((1, 3, 3), (1, 2, 2)),
            "MaxPool3d_4a_3x3": NaiveMaxPool((3, 3, 3), (2, 2, 2)),
            "MaxPool3d_5a_2x2": NaiveMaxPool((2, 2, 2), (2, 2, 2)),
        }
        cin = 192
        for name, widths in _MIXED.items():
            layers[name] = NaiveInception(cin, widths)
            cin = mixed_channels(name)
        layers["Logits"] = NaiveUnit3D(cin, num_classes, 1, bn=False, relu=False)
        stop = ENDPOINTS.index(endpoint)
        self.layers = nn.ModuleDict({n: layers[n] for n in ENDPOINTS[: stop + 1]})

    def forward(self, x: Tensor) -> Tensor:
        for name, layer in self.layers.items():
            if name == "Logits":
                x = F.avg_pool3d(x, (2, 7, 7), stride=1)
                return layer(x).mean(dim=(3, 4)).mean(dim=2)
            x = layer(x)
        return x


_BRANCH_SCOPES = {
    "b0": "Branch_0/Conv3d_0a_1x1",
    "b1a": "Branch_1/Conv3d_0a_1x1",
    "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1",
    "b2b": "Branch_2/Conv3d_0b_3x3",
    "b3": "Branch_3/Conv3d_0b_1x1",
}


def _load_unit(unit: NaiveUnit3D, raw: dict[str, Tensor], scope: str) -> None:
    with torch.no_grad():
        unit.conv.weight.copy_(raw[f"{scope}.weight"])
        if unit.bn is None:
            unit.conv.bias.copy_(raw[f"{scope}.bias"])
            return
        unit.bn.weight.fill_(1.0)  # Sonnet BatchNorm: no scale
        unit.bn.bias.copy_(raw[f"{scope}.bn_beta"])
        unit.bn.running_mean.copy_(raw[f"{scope}.bn_mean"])
        unit.bn.running_var.copy_(raw[f"{scope}.bn_var"])


def build_naive(endpoint: str = "Mixed_4e") -> NaiveI3d:
    """The naive port with DeepMind's Kinetics-400 weights, truncated at ``endpoint``, eval."""
    raw = load_raw()
    model = NaiveI3d(endpoint, KINETICS400_RGB.num_classes)
    for name, layer in model.layers.items():
        if isinstance(layer, NaiveInception):
            for attr, scope in _BRANCH_SCOPES.items():
                _load_unit(getattr(layer, attr), raw, f"{name}/{scope}")
        elif name == "Logits":
            _load_unit(layer, raw, "Logits/Conv3d_0c_1x1")
        elif isinstance(layer, NaiveUnit3D):
            _load_unit(layer, raw, name)
    return model.eval()


def rel_l2(a: Tensor, ref: Tensor) -> float:
    """``||a - ref|| / ||ref||`` in float64."""
    a, ref = a.double(), ref.double()
    return float((a - ref).norm() / ref.norm().clamp_min(1e-30))


def main() -> None:
    p = argparse.ArgumentParser(description="Check the naive I3D port against stmil.load_i3d.")
    p.add_argument("--endpoint", default="Mixed_4e", choices=ENDPOINTS)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="input height = width (default 64)")
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.frames, args.size, args.size) * 2 - 1
    with torch.inference_mode():
        ours = load_i3d(args.endpoint)(x)
        naive = build_naive(args.endpoint)(x)
    err = rel_l2(naive, ours)
    print(f"| endpoint | input | output | rel L2 (naive vs stmil) |\n|---|---|---|---|\n"
          f"| {args.endpoint} | {tuple(x.shape)} | {tuple(ours.shape)} | {err:.2e} |")
    if err > 1e-5:
        raise SystemExit(f"naive port differs from stmil: rel L2 {err:.2e} > 1e-5")


if __name__ == "__main__":
    main()
