"""Official landmark decoding from heatmap logits."""

from __future__ import annotations

import torch


def heatmap_centroids(heatmap_logits: torch.Tensor) -> torch.Tensor:
    """(B, N, h, w) logits -> (B, N, 2) XY in [0, 1]: centroid of the sigmoid map over the whole map (official
    decoding; background weight included), then (c + 0.5) / size."""
    exact = heatmap_logits.dtype in (torch.float32, torch.float64)
    weights = torch.sigmoid(heatmap_logits if exact else heatmap_logits.float())
    height, width = weights.shape[-2:]
    ys = torch.arange(height, dtype=weights.dtype, device=weights.device)
    xs = torch.arange(width, dtype=weights.dtype, device=weights.device)
    total = weights.sum((2, 3)).clamp(min=1e-6)
    x = (weights.sum(2) * xs).sum(-1) / total
    y = (weights.sum(3) * ys).sum(-1) / total
    return torch.stack([(x + 0.5) / width, (y + 0.5) / height], dim=-1)
