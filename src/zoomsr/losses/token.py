"""Token-level loss terms of the ITER backbones (`iter`, `vq_refiner`) and their VQ stage."""

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


class ClassBalancedCrossEntropy(nn.Module):
    """``weight * CE(logits, target; w)`` with class weights from the "effective number of
    samples" (Cui et al. 2019, Eq. 8), ITER's ``class_balanced_xentropy`` for its evaluator on
    the LQ tokens: ``w_c = (1 - beta) / (1 - beta^{n_c})``, normalized to sum to the number of
    classes, ``n_c`` the count of class ``c`` in the batch.

    Args:
        logits: key of ``(B, L, C)`` logits. target: key of ``(B, L)`` class indices.
        beta: 0.9999 (ITER). weight: multiplier (1).
    """

    def __init__(
        self,
        logits: str = "eval_init_logits",
        target: str = "eval_init_targets",
        beta: float = 0.9999,
        weight: float = 1.0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.logits, self.target, self.beta, self.weight, self.eps = (
            logits, target, beta, weight, eps,
        )  # fmt: skip

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = _get(outputs, self.logits).float()
        logits = logits.reshape(-1, logits.shape[-1])
        target = _get(outputs, self.target).long().reshape(-1)
        classes = logits.shape[-1]
        counts = torch.bincount(target, minlength=classes).float()
        w = (1.0 - self.beta) / (1.0 - self.beta**counts + self.eps)
        w = w / (w.sum() + self.eps) * classes
        return self.weight * F.cross_entropy(logits, target, weight=w)


class WeightedTokenCrossEntropy(nn.Module):
    """``weight * mean_{b, n} r_b CE(logits_{b,n}, target_{b,n})``: ITER's refiner loss, the
    token CE over *every* position, each sample weighted by ``r_b``, its hidden fraction (a
    sample with more to predict counts more).

    Args:
        logits: key of ``(B, L, K)``. target: key of ``(B, L)``. sample_weight: key of ``(B,)``.
        weight: multiplier (1).
    """

    def __init__(
        self,
        logits: str = "refine_logits",
        target: str = "hr_tokens",
        sample_weight: str = "refine_weight",
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.logits, self.target, self.sample_weight, self.weight = (
            logits, target, sample_weight, weight,
        )  # fmt: skip

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = _get(outputs, self.logits).float()
        target = _get(outputs, self.target).long()
        ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, L)
        r = _get(outputs, self.sample_weight).float().view(-1, 1)
        return self.weight * (ce * r).mean()
