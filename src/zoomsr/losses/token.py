"""Token-level loss terms of the ``vq_refiner`` backbone (ITER) and its VQGAN stage."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _get(outputs: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in outputs:
        raise KeyError(f"loss needs '{key}', backbone gave {sorted(outputs)}")
    return outputs[key]


class TokenCrossEntropy(nn.Module):
    """``weight * CE(logits, target)`` over tokens: ITER's token classification losses.

    Args:
        logits: key of ``(B, L, K)`` logits in the backbone's outputs.
        target: key of ``(B, L)`` int64 code indices; ``-100`` entries are ignored (the
            refiner's unmasked positions).
        weight: multiplier in the summed loss (default 1).
        label_smoothing: passed to ``F.cross_entropy`` (default 0).
    """

    def __init__(
        self,
        logits: str = "lq_logits",
        target: str = "hr_tokens",
        weight: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.logits, self.target, self.weight = logits, target, weight
        self.label_smoothing = label_smoothing

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, target = _get(outputs, self.logits).float(), _get(outputs, self.target).long()
        if bool((target == -100).all()):  # nothing to predict: a zero that keeps the graph
            return logits.sum() * 0.0
        ce = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            target.reshape(-1),
            ignore_index=-100,
            label_smoothing=self.label_smoothing,
        )
        return self.weight * ce


class BinaryCrossEntropy(nn.Module):
    """``weight * BCE(logits, target)``: ITER's evaluation network ("is this token correct").

    Args:
        logits: key of the logits (any shape) in the backbone's outputs.
        target: key of the {0, 1} targets, same shape.
        weight: multiplier (default 1).
        balanced: weight each class by half the inverse of its frequency in the batch, so
            "correct" and "wrong" count equally whatever their share (ITER's class-balanced
            cross-entropy); False: the plain mean.
    """

    def __init__(
        self,
        logits: str = "eval_logits",
        target: str = "eval_targets",
        weight: float = 1.0,
        balanced: bool = True,
    ) -> None:
        super().__init__()
        self.logits, self.target = logits, target
        self.weight, self.balanced = weight, balanced

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, target = _get(outputs, self.logits).float(), _get(outputs, self.target).float()
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if not self.balanced:
            return self.weight * per.mean()
        pos = target.mean().clamp(1e-6, 1 - 1e-6)
        w = torch.where(target > 0.5, 0.5 / pos, 0.5 / (1 - pos))
        return self.weight * (per * w).mean()


class ScalarLoss(nn.Module):
    """``weight * outputs[key]``: a loss the backbone computed itself (the VQ commitment and
    codebook loss, VQ-VAE Eq. 3)."""

    def __init__(self, key: str = "vq_loss", weight: float = 1.0) -> None:
        super().__init__()
        self.key, self.weight = key, weight

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.weight * _get(outputs, self.key).float()
