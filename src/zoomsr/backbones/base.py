"""The backbone contract: one zoom step of factor ``scale``.

A backbone is a plain ``nn.Module`` (no Lightning, no Hydra). Images cross its public methods
as float tensors in [0, 1], RGB, ``(B, 3, H, W)``; it may map to [-1, 1] or to latents inside.

What every backbone used to repeat lives here, once:

- the public :meth:`Backbone.upscale` wrapper: eval mode and no grad for the call (the previous
  mode restored after, whatever happens), one padding policy (reflect-pad the LR to
  :attr:`size_multiple`, crop back), gray images through an RGB model, the size limit
  (:attr:`max_input_size`) and the seeded generator;
- for backbones whose step is "bicubic-upsample the LR, then a same-size network"
  (:attr:`refines_upsampled`: SD3/OSEDiff, SR3, ITER): :meth:`Backbone.refine_upsampled` takes
  upsampled image itself, which is how Chain-of-Zoom feeds its model (the zoomed crop resized
  to ``P x P``), and :meth:`upsample` / :meth:`to_model_range` / :meth:`from_model_range`;
- the HR = LR x scale check and the HR-multiple check of training crops;
- :func:`seeded` (the construction-time RNG fork) and :meth:`Backbone.generator`;
- optional abilities, declared with typed arguments so callers never probe with
  ``getattr``: :meth:`Backbone.export_lora`, :meth:`Backbone.regularizer_parameters`,
  :meth:`Backbone.check_weights`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoomsr.errors import ZoomSRError


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Within the block torch's CPU RNG is seeded with ``seed`` (None: left alone); the global
    RNG state is restored after, so building a model never changes what a caller draws next."""
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        yield


class Backbone(nn.Module):
    """Base class of every zoomsr backbone.

    Subclasses set ``self.scale`` and implement :meth:`_upscale` (LR -> SR), or, with
    ``refines_upsampled = True``, :meth:`_refine` (upsampled LR in [-1, 1] -> SR in [-1, 1]).
    Learned backbones also implement :meth:`training_outputs` (the named tensors the loss terms
    read) and may override :meth:`trainable_state_dict` / :meth:`load_trainable_state_dict`
    when only part of the network trains (LoRA adapters).
    """

    scale: int
    #: True for backbones with no parameters to train (bicubic, nearest).
    is_learned: bool = True
    #: LR sides are padded to a multiple of this by :meth:`upscale` (U-Net downsampling).
    size_multiple: int = 1
    #: HR sides the network needs a multiple of (:meth:`check_hr_size`, :meth:`refine_upsampled`).
    hr_multiple: int = 1
    #: the largest LR side one :meth:`upscale` call takes (a positional-embedding range);
    #: None: any. The zoom engine tiles larger inputs (or says so in one line).
    max_input_size: int | None = None
    #: the step is "bicubic-upsample to the output size, then a same-size network":
    #: :meth:`refine_upsampled` exists and the zoom engine may hand it the upsampled view itself.
    refines_upsampled: bool = False
    #: the error class of a size problem (a backbone's own ZoomSRError subclass)
    size_error: type[ZoomSRError] = ZoomSRError
    #: seed of the step's random draws (latent sample, sampler noise); None: torch's global RNG.
    seed: int | None = None

    # -- inference ---------------------------------------------------------------------------
    def upscale(
        self,
        lr: torch.Tensor,
        prompts: list[str] | None = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """One inference step.

        Args:
            lr: ``(B, C, h, w)`` in [0, 1], ``C`` 3 (or 1: a gray image goes through an RGB
                model as RGB and comes back gray).
            prompts: one text per image, or None for backbones that take none.
            generator: source of the step's random draws; None: one seeded by ``seed`` (None:
                torch's global RNG).
            options: the backbone's own step options (SR3: ``progress``; ITER: ``steps``).

        Returns:
            ``(B, C, h * scale, w * scale)`` in [0, 1].

        Raises:
            ZoomSRError: the input is larger than :attr:`max_input_size`.
        """
        self.check_input_size(*lr.shape[-2:])
        gray = lr.shape[1] == 1 and self.is_learned
        x = lr.expand(-1, 3, -1, -1) if gray else lr
        h, w = x.shape[-2:]
        x = pad_to(x, self.size_multiple)
        with self.inference():
            if self.refines_upsampled:
                sr = self._refined(self.upsample(x), prompts, generator, options)
            else:
                sr = self._upscale(x, prompts, self._generator(generator), **options)
        sr = sr[..., : h * self.scale, : w * self.scale].clamp(0, 1)
        return sr.mean(1, keepdim=True) if gray else sr

    def refine_upsampled(
        self,
        up: torch.Tensor,
        prompts: list[str] | None = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """The step on an image already upsampled to the output size (``refines_upsampled``
        backbones only): CoZ hands its SD3 the zoomed crop resized to ``P x P``.

        Args:
            up: ``(B, 3, H, W)`` in [0, 1], any size (reflect-padded to :attr:`hr_multiple`).

        Returns:
            ``(B, 3, H, W)`` in [0, 1].
        """
        if not self.refines_upsampled:
            raise ZoomSRError(f"{type(self).__name__} takes an LR image: use upscale().")
        self.check_input_size(*(-(-s // self.scale) for s in up.shape[-2:]))
        h, w = up.shape[-2:]
        with self.inference():
            out = self._refined(pad_to(up, self.hr_multiple), prompts, generator, options)
        return out[..., :h, :w].clamp(0, 1)

    def _refined(self, up: torch.Tensor, prompts, generator, options: dict) -> torch.Tensor:
        self.check_hr_size(*up.shape[-2:])
        y = self._refine(self.to_model_range(up), prompts, self._generator(generator), **options)
        return self.from_model_range(y)

    def _upscale(
        self, lr: torch.Tensor, prompts: list[str] | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """LR ``(B, 3, h, w)`` in [0, 1], sides multiples of :attr:`size_multiple` -> SR in
        [0, 1]. Called by :meth:`upscale` in eval mode without grad."""
        raise NotImplementedError(f"{type(self).__name__} implements neither _upscale nor _refine")

    def _refine(
        self, x: torch.Tensor, prompts: list[str] | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Upsampled LR ``(B, 3, H, W)`` in [-1, 1], sides multiples of :attr:`hr_multiple` ->
        SR ``(B, 3, H, W)`` in [-1, 1] (``refines_upsampled`` backbones)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """Eval mode (no dropout) and no grad within the block; the previous mode after."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def _generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        if generator is not None or self.seed is None:
            return generator
        return torch.Generator().manual_seed(int(self.seed))

    # -- the shared conversions and checks ----------------------------------------------------
    def upsample(self, lr: torch.Tensor) -> torch.Tensor:
        """Bicubic ``x scale`` of ``(B, 3, h, w)`` in [0, 1] (torch's kernel, as the models were
        trained with), clamped to [0, 1]."""
        size = (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale)
        up = F.interpolate(lr.float(), size=size, mode="bicubic", align_corners=False)
        return up.clamp(0.0, 1.0)

    @staticmethod
    def to_model_range(img: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> [-1, 1]."""
        return img.clamp(0.0, 1.0) * 2.0 - 1.0

    @staticmethod
    def from_model_range(y: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1], clamped (CoZ's order: clamp, then ``* 0.5 + 0.5``)."""
        return y.float().clamp(-1.0, 1.0) * 0.5 + 0.5

    def check_hr_size(self, height: int, width: int) -> None:
        """Raise :class:`ZoomSRError` unless both HR sides are multiples of :attr:`hr_multiple`."""
        m = self.hr_multiple
        if height % m or width % m:
            raise self.size_error(
                f"{type(self).__name__} needs HR sides (LR size x scale {self.scale}) divisible "
                f"by {m}; got {height}x{width}. Crop the training images to a multiple of {m}."
            )

    def check_pair(self, lr: torch.Tensor, hr: torch.Tensor) -> None:
        """Raise :class:`ZoomSRError` unless ``hr`` is ``lr`` x ``scale`` with valid sides."""
        want = (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale)
        if tuple(hr.shape[-2:]) != want:
            raise self.size_error(
                f"HR {tuple(hr.shape[-2:])} is not LR {tuple(lr.shape[-2:])} x {self.scale}"
            )
        self.check_hr_size(*want)

    def check_input_size(self, height: int, width: int) -> None:
        """Raise :class:`ZoomSRError` (one line) for an LR side above :attr:`max_input_size`."""
        limit = self.max_input_size
        if limit is not None and max(height, width) > limit:
            raise ZoomSRError(
                f"{type(self).__name__} takes inputs of at most {limit} px a side (its "
                f"positional range); got {width}x{height}. Set zoom.tile_size<={limit} or a "
                "smaller zoom.process_size."
            )

    # -- training ----------------------------------------------------------------------------
    def training_outputs(
        self,
        lr: torch.Tensor,
        hr: torch.Tensor,
        prompts: list[str] | None = None,
        seeds: torch.Tensor | None = None,
        **options: Any,
    ) -> dict[str, torch.Tensor]:
        """The training forward: named tensors for the loss terms (e.g. ``eps_pred``/``eps``).

        Args:
            lr: ``(B, 3, h, w)`` in [0, 1]. hr: ``(B, 3, h*scale, w*scale)`` in [0, 1].
            prompts: one text per image, or None.
            seeds: ``(B,)`` int64, one per sample. When given, every random draw of the step
                (noise, timesteps) comes from the sample's own seed, so a sample gets the same
                noise whichever device or batch it lands in: DDP on N devices then equals one
                device with the same global batch, and a resumed run repeats the original.
            options: the backbone's own training options (SD3: ``vsd``, the VSD settings).

        Raises:
            ZoomSRError: ``hr`` is not ``lr`` x ``scale`` or its sides do not fit the network.
        """
        self.check_pair(lr, hr)
        return self._training_outputs(lr, hr, prompts, seeds, **options)

    def _training_outputs(
        self,
        lr: torch.Tensor,
        hr: torch.Tensor,
        prompts: list[str] | None,
        seeds: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """What :meth:`training_outputs` returns, the sizes checked."""
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

    # -- optional abilities (declared here, so nothing probes with getattr) -------------------
    def regularizer_parameters(self) -> list[nn.Parameter]:
        """Weights trained by a separate regularizer objective (VSD's "fake" score), in their
        own optimizer group; default: none."""
        return []

    def export_lora(self, folder: str | Path) -> list[Path]:
        """Write the trained adapters in their tools' layout into ``folder``; returns the files
        written. Default: nothing to export (no adapters)."""
        return []

    @classmethod
    def check_weights(cls, config: Mapping[str, Any]) -> None:
        """Start-up check of ``train.py`` (:mod:`zoomsr.tasks.preflight`), before the heavy
        imports: raise :class:`ZoomSRError` naming what ``config`` (the ``backbone`` node)
        points at but is missing. Default: nothing to check."""

    @classmethod
    def inference_kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The saved training arguments adjusted for evaluation and inference
        (:func:`zoomsr.checkpoint.load_backbone`): settings that only save training memory at
        another cost go back to their inference choice. Default: unchanged."""
        return kwargs


def pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``(B, C, h, w)`` at the bottom/right to sides that are multiples of ``multiple``:
    by reflection, or by replication where the image is too small to reflect."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if min(h, w) > max(pad_h, pad_w) else "replicate"
    return F.pad(x.float(), (0, pad_w, 0, pad_h), mode=mode)
