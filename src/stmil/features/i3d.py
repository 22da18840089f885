"""Inception-I3D (RGB) as plain ``nn.Module``s with named endpoints.

A faithful port of DeepMind's ``kinetics-i3d`` network. It knows nothing about files: weights
come from :mod:`stmil.features.weights`. Layout is PyTorch's ``(B, C, T, H, W)``.

TensorFlow "SAME" padding is reproduced exactly. Stride-1 layers pad symmetrically, which the
convolution and pooling ops do themselves. Strided layers pad ``total // 2`` before and the rest
after (zeros for convolutions, ``-inf`` for max pooling), computed from the input size.

BatchNorm is folded into each convolution at load time (:func:`fold_batchnorm`), so a unit is a
biased convolution followed by ReLU. The three 1x1 convolutions that read an inception module's
input (branches 0, 1a and 2a) run as one convolution and are split afterwards.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stmil.errors import ConfigError

ENDPOINTS: tuple[str, ...] = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "Logits",
)

# Inception module widths: (b0, b1a, b1b, b2a, b2b, b3), as in DeepMind's i3d.py.
_MIXED: dict[str, tuple[int, ...]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def mixed_channels(name: str) -> int:
    """Output channels of an inception module, e.g. 528 for ``Mixed_4e``."""
    w = _MIXED[name]
    return w[0] + w[2] + w[4] + w[5]


def endpoint_channels(endpoint: str) -> int:
    """Channel count of the feature map at ``endpoint`` (400 classes for ``Logits``)."""
    fixed = {
        "Conv3d_1a_7x7": 64,
        "MaxPool3d_2a_3x3": 64,
        "Conv3d_2b_1x1": 64,
        "Conv3d_2c_3x3": 192,
        "MaxPool3d_3a_3x3": 192,
        "MaxPool3d_4a_3x3": mixed_channels("Mixed_3c"),
        "MaxPool3d_5a_2x2": mixed_channels("Mixed_4f"),
        "Logits": 400,
    }
    if endpoint in fixed:
        return fixed[endpoint]
    if endpoint in _MIXED:
        return mixed_channels(endpoint)
    raise ConfigError(f"unknown endpoint {endpoint!r}; choose one of {', '.join(ENDPOINTS)}")


def same_pads(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """TF "SAME" padding for ``F.pad``: ``[w_before, w_after, h_before, h_after, t_before, ...]``.

    ``size`` is ``(T, H, W)``. The output has ``ceil(n / s)`` positions; the total padding is
    ``max((out - 1) * s + k - n, 0)``, with ``total // 2`` before and the rest after.
    """
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


class Unit3D(nn.Module):
    """Conv3d (BatchNorm folded into its bias) + optional ReLU, with TF SAME padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = (kernel,) * 3, (stride,) * 3, relu
        pad = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv3d(cin, cout, kernel, stride, padding=pad, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, cin, T, H, W) -> (B, cout, T', H', W')``."""
        if self.stride[0] != 1:
            x = F.pad(x, same_pads(tuple(x.shape[2:]), self.kernel, self.stride))
        x = self.conv(x)
        return F.relu(x, inplace=True) if self.relu else x


class MaxPoolSame(nn.Module):
    """Max pooling with TF SAME padding (padded cells never win)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W) -> (B, C, ceil(T/st), ceil(H/sh), ceil(W/sw))``."""
        pads = same_pads(tuple(x.shape[2:]), self.kernel, self.stride)
        if any(pads):
            x = F.pad(x, pads, value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class Inception(nn.Module):
    """An inception module. The 1x1 convolutions of branches 0, 1a and 2a run fused."""

    def __init__(self, cin: int, widths: tuple[int, ...]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.split = (b0, b1a, b2a)
        self.reduce = Unit3D(cin, b0 + b1a + b2a, 1)
        self.b1 = Unit3D(b1a, b1b, 3)
        self.b2 = Unit3D(b2a, b2b, 3)
        self.b3 = Unit3D(cin, b3, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, cin, T, H, W) -> (B, b0 + b1b + b2b + b3, T, H, W)``."""
        y0, y1, y2 = torch.split(self.reduce(x), self.split, dim=1)
        y3 = self.b3(F.max_pool3d(x, 3, 1, 1))
        return torch.cat([y0, self.b1(y1), self.b2(y2), y3], dim=1)


class InceptionI3d(nn.Module):
    """Inception-I3D RGB, truncated at ``endpoint`` (default ``Mixed_4e``).

    Input ``(B, 3, T, H, W)`` in ``[-1, 1]``. Output: the feature map at ``endpoint``,
    ``(B, C, T', H', W')`` (for ``Mixed_4e`` and a 16x224x224 clip, ``(B, 528, 4, 14, 14)``), or
    ``(B, 400)`` Kinetics-400 logits for ``Logits``.
    """

    def __init__(self, endpoint: str = "Mixed_4e", num_classes: int = 400):
        super().__init__()
        endpoint_channels(endpoint)  # validates the name
        self.endpoint = endpoint
        layers: dict[str, nn.Module] = {
            "Conv3d_1a_7x7": Unit3D(3, 64, 7, stride=2),
            "MaxPool3d_2a_3x3": MaxPoolSame((1, 3, 3), (1, 2, 2)),
            "Conv3d_2b_1x1": Unit3D(64, 64, 1),
            "Conv3d_2c_3x3": Unit3D(64, 192, 3),
            "MaxPool3d_3a_3x3": MaxPoolSame((1, 3, 3), (1, 2, 2)),
            "MaxPool3d_4a_3x3": MaxPoolSame((3, 3, 3), (2, 2, 2)),
            "MaxPool3d_5a_2x2": MaxPoolSame((2, 2, 2), (2, 2, 2)),
        }
        cin = 192
        for name, widths in _MIXED.items():
            layers[name] = Inception(cin, widths)
            cin = mixed_channels(name)
        layers["Logits"] = Unit3D(cin, num_classes, 1, relu=False)
        stop = ENDPOINTS.index(endpoint)
        self.layers = nn.ModuleDict({n: layers[n] for n in ENDPOINTS[: stop + 1]})

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, T, H, W) -> (B, C, T', H', W')`` or ``(B, num_classes)`` at ``Logits``."""
        for name, layer in self.layers.items():
            if name == "Logits":
                x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # VALID
                return layer(x).mean(dim=(3, 4)).mean(dim=2)
            x = layer(x)
        return x
