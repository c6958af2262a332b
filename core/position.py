"""Where each cell of a feature grid lies: fixed sinusoidal features of its centre.

Both models learn a linear map of these (``position`` in each model), so attention can tell
cells apart by place as well as by content; pooled CNN features alone say little about where
a region is.
"""

from __future__ import annotations

import math

import torch


def coordinate_features(h: int, w: int, bands: int = 4, device=None) -> torch.Tensor:
    """Fixed features of each cell centre (x, y) in [0, 1]: [sin x, cos x, sin y, cos y] at
    frequencies pi * 2^k, k < bands: (P, 4 * bands), cells rows first."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # (h, w)
    freqs = math.pi * 2.0 ** torch.arange(bands, device=device, dtype=torch.float32)  # (bands,)
    angles = torch.stack([x, y], -1).reshape(-1, 2, 1) * freqs  # (P, 2, bands)
    return torch.cat([angles.sin(), angles.cos()], -1).reshape(h * w, -1)  # (P, 4*bands)
