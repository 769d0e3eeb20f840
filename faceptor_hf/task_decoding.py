"""Tensor-level decoders: raw head outputs -> predictions, with the official formulas.

Every consumer (the model's decoded landmarks, the image processor's JSON, the pipeline, evaluation, training
metrics) calls these, so each formula exists once. All functions are batched, differentiable where that makes
sense, keep the input's device, and compute in float32 (float64 stays float64) so half-precision models decode
exactly like fp32 ones.

Shapes: B = faces, K = age bins, A = attributes, C = classes, N = landmarks, h x w = head map size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _exact(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def expected_age(logits: torch.Tensor) -> torch.Tensor:
    """(B, K) age-bin logits -> (B,) years: p_k = sigmoid(z_k) / sum_j sigmoid(z_j), age = sum_k k * p_k (official
    DLDL-v2 read-out: sigmoid + L1 normalization, not softmax)."""
    weights = torch.sigmoid(_exact(logits))
    weights = weights / weights.sum(-1, keepdim=True)
    bins = torch.arange(logits.shape[-1], dtype=weights.dtype, device=weights.device)
    return (weights * bins).sum(-1)


def attribute_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(B, A) logits -> (B, A) probabilities sigmoid(z)."""
    return torch.sigmoid(_exact(logits))


def attribute_presence(logits: torch.Tensor) -> torch.Tensor:
    """(B, A) logits -> (B, A) bool: official ``round(sigmoid(z)) == 1``, i.e. z > 0 (z = 0 counts as absent)."""
    return logits > 0


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(B, C) logits -> (B, C) softmax probabilities."""
    return _exact(logits).softmax(-1)


def class_predictions(logits: torch.Tensor) -> torch.Tensor:
    """(B, C) logits -> (B,) int64 argmax class (official expression prediction)."""
    return logits.argmax(-1)


def normalized_embedding(embedding: torch.Tensor) -> torch.Tensor:
    """(B, D) raw recognition embedding -> (B, D) L2-normalized (the official verification protocol normalizes
    after summing the embeddings of a face and its mirror image: pass that sum here)."""
    return F.normalize(_exact(embedding), dim=-1)


def embedding_similarity(embedding_a: torch.Tensor, embedding_b: torch.Tensor) -> torch.Tensor:
    """(..., D) x (..., D) raw or normalized embeddings -> (...) cosine similarity in [-1, 1].

    For unit vectors, squared L2 distance (the official verification score) = 2 - 2 * cosine."""
    return (normalized_embedding(embedding_a) * normalized_embedding(embedding_b)).sum(-1)


def heatmap_centroids(heatmap_logits: torch.Tensor) -> torch.Tensor:
    """(B, N, h, w) logits -> (B, N, 2) XY in [0, 1] of the crop: the official sigmoid-weighted centroid over the
    whole map (background weight included, total clamped at 1e-6), then (c + 0.5) / size."""
    weights = torch.sigmoid(_exact(heatmap_logits))
    height, width = weights.shape[-2:]
    ys = torch.arange(height, dtype=weights.dtype, device=weights.device)
    xs = torch.arange(width, dtype=weights.dtype, device=weights.device)
    total = weights.sum((2, 3)).clamp(min=1e-6)
    x = (weights.sum(2) * xs).sum(-1) / total
    y = (weights.sum(3) * ys).sum(-1) / total
    return torch.stack([(x + 0.5) / width, (y + 0.5) / height], dim=-1)


def landmark_points(normalized_points: torch.Tensor, crop_size: tuple[int, int]) -> torch.Tensor:
    """(B, N, 2) XY in [0, 1] (``heatmap_centroids``) -> (B, N, 2) pixel-index XY in the (height, width) crop:
    p = value * size - 0.5, as the official evaluation does before the inverse crop transform."""
    height, width = crop_size
    scale = torch.tensor([width, height], dtype=normalized_points.dtype, device=normalized_points.device)
    return normalized_points * scale - 0.5


def upsampled_mask_logits(logits: torch.Tensor, crop_size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) raw parsing logits -> (B, C, H, W) at the crop size, bilinear with align_corners=False (the
    official ``ParsingOutput``)."""
    logits = _exact(logits)
    if tuple(logits.shape[-2:]) == tuple(crop_size):
        return logits
    return F.interpolate(logits, size=tuple(crop_size), mode="bilinear", align_corners=False)


def parsing_labels(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) or (C, H, W) logits -> (B, H, W) / (H, W) int64 class per pixel (argmax over classes)."""
    return logits.argmax(-3)


MASK_FORMATS = ("list", "numpy", "rle")


def encode_mask(mask: np.ndarray, mask_format: str):
    """(H, W) uint8 class mask -> ``"numpy"`` (the array), ``"list"`` (nested lists, JSON-ready) or ``"rle"``
    (``{"size": [H, W], "counts": [[value, run_length], ...]}``, runs in row-major order)."""
    if mask_format == "numpy":
        return mask
    if mask_format == "list":
        return mask.tolist()
    if mask_format == "rle":
        flat = mask.reshape(-1)
        starts = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1])
        lengths = np.diff(np.concatenate([starts, [flat.size]]))
        return {"size": list(mask.shape), "counts": [[int(flat[s]), int(n)] for s, n in zip(starts, lengths)]}
    raise ValueError(f"mask_format must be one of {list(MASK_FORMATS)}, got {mask_format!r}")


def decode_mask(encoded) -> np.ndarray:
    """Inverse of ``encode_mask`` for any of its formats -> (H, W) uint8."""
    if isinstance(encoded, np.ndarray):
        return encoded
    if isinstance(encoded, dict):
        counts = encoded["counts"]
        flat = (np.concatenate([np.full(n, v, dtype=np.uint8) for v, n in counts]) if counts
                else np.zeros(0, dtype=np.uint8))
        return flat.reshape(encoded["size"])
    return np.asarray(encoded, dtype=np.uint8)


__all__ = [
    "MASK_FORMATS",
    "decode_mask",
    "encode_mask",
    "attribute_presence",
    "attribute_probabilities",
    "class_predictions",
    "class_probabilities",
    "embedding_similarity",
    "expected_age",
    "heatmap_centroids",
    "landmark_points",
    "normalized_embedding",
    "parsing_labels",
    "upsampled_mask_logits",
]
