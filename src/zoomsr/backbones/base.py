"""The backbone contract: one zoom step of factor ``scale``.

A backbone is a plain ``nn.Module`` (no Lightning, no Hydra). Images cross its public methods
as float tensors in [0, 1], RGB, ``(B, 3, H, W)``; it may map to [-1, 1] or to latents inside.
"""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """Base class of every zoomsr backbone.

    Subclasses set ``self.scale`` and implement :meth:`upscale`. Learned backbones also
    implement :meth:`training_outputs` (the named tensors the loss terms read) and may override
    :meth:`trainable_state_dict` / :meth:`load_trainable_state_dict` when only part of the
    network trains (LoRA adapters).
    """

    scale: int
    #: True for backbones with no parameters to train (bicubic, nearest).
    is_learned: bool = True
    #: LR sides must be multiples of this (U-Net downsampling); callers pad to it.
    size_multiple: int = 1

    def upscale(self, lr: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
        """One inference step.

        Args:
            lr: ``(B, 3, h, w)`` in [0, 1].
            prompts: one text per image, or None for backbones that take none.

        Returns:
            ``(B, 3, h * scale, w * scale)`` in [0, 1].
        """
        raise NotImplementedError

    def training_outputs(
        self,
        lr: torch.Tensor,
        hr: torch.Tensor,
        prompts: list[str] | None = None,
        seeds: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The training forward: named tensors for the loss terms (e.g. ``eps_pred``/``eps``).

        Args:
            lr: ``(B, 3, h, w)`` in [0, 1]. hr: ``(B, 3, h*scale, w*scale)`` in [0, 1].
            prompts: one text per image, or None.
            seeds: ``(B,)`` int64, one per sample. When given, every random draw of the step
                (noise, timesteps) comes from the sample's own seed, so a sample gets the same
                noise whichever device or batch it lands in: DDP on N devices then equals one
                device with the same global batch, and a resumed run repeats the original.
        """
        raise NotImplementedError(f"{type(self).__name__} has nothing to train")

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint keeps: those with ``requires_grad`` (the whole net for SR3)."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in trainable}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` saved; missing or unexpected keys are errors."""
        expected = set(self.trainable_state_dict())
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise KeyError(
                f"{type(self).__name__} state mismatch: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        self.load_state_dict(state, strict=False)
