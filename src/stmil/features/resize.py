"""The one resize definition every input path uses (CPU workers, serial path, GPU upload).

A frame is resized as a whole (no crop) to ``size`` x ``size`` with bilinear interpolation and
antialiasing (``torch.nn.functional.interpolate(..., mode="bilinear", antialias=True,
align_corners=False)`` on float32 values 0..255), then scaled to ``[-1, 1]``. The same function
runs on CPU tensors (decode workers, the serial path) and on the model's device (uint8 frames
uploaded to a GPU), so both paths compute the same thing; on one device, resizing frames one
at a time or in a batch gives bitwise-equal results (tested).

:data:`RESIZE` names this definition; every feature file records it (``"resize"``) and
``extract`` refuses to mix files made with another definition in one folder. Change the name
whenever the arithmetic changes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

RESIZE = "bilinear-antialias"


def resize_frames(frames: np.ndarray | Tensor, size: int = 224) -> Tensor:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, size, size)`` float32 in ``[-1, 1]``, same device.

    ``frames`` may be a numpy array (CPU) or a tensor on any device.
    """
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x.mul_(2.0 / 255.0).sub_(1.0).clamp_(-1.0, 1.0)


def resize_clips(clips: Tensor, size: int = 224) -> Tensor:
    """uint8 clips ``(B, T, H, W, 3)`` -> model input ``(B, 3, T, size, size)`` float32.

    Every frame goes through :func:`resize_frames`, on the clips' own device (a GPU when the
    clips were uploaded there).
    """
    b, t = clips.shape[:2]
    x = resize_frames(clips.reshape(b * t, *clips.shape[2:]), size)  # (B*T, 3, S, S)
    return x.view(b, t, 3, size, size).permute(0, 2, 1, 3, 4).contiguous()
