"""ITER as published (Chen et al., AAAI 2024, arXiv:2312.05616; github.com/chaofengc/ITER):
iterative token evaluation and refinement on a Swin-VQGAN, as a zoomsr backbone.

The networks are :mod:`zoomsr.backbones.iter_arch`; their module names equal ITER's, so the
backbone's state dict has ITER's keys (``vqgan.*``, ``lq_encoder.*``, ``token_refine_net.*``)
and ``zoomsr import-iter`` maps a released checkpoint 1:1.

Three training stages, ``stage=``:

- ``hq``: the Swin-VQGAN on HR images (ITER's ``SwinVQGANModel``): L1 + LPIPS + SSIM + the
  VQ loss + a hinge GAN (``module=gan``).
- ``token_pred``: the LQ encoder on the frozen VQGAN (ITER's ``LQ_train_phase: token_pred``):
  token cross-entropy against the HR image's codes, plus L1 / LPIPS on the VQGAN decoding of
  Gumbel-softmax (hard) samples of its logits.
- ``refine``: LQ encoder, refiner and evaluator together (ITER's release,
  ``LQ_train_phase: refine``), see :meth:`ITER._refine_outputs`.

Inference (:meth:`ITER.sample`), ITER's ``TokenRefine.token_refine`` with the release settings
(``inference_iter.py``: T = 8, linear schedule, alpha 0.7, temperature 1): the evaluator
scores the LQ encoder's argmax tokens; tokens with ``p(right) >= alpha`` are trusted. Pass
``i = 0..T-1`` has the budget ``k_i = int((1 - gamma(i / T)) N)`` kept tokens and is skipped
while ``k_i`` is below the trusted count. The first pass that runs shows the refiner only the
trusted tokens; each later one grows the kept set to ``max(kept + 1, k_i)`` positions by
multinomial sampling (``p(right)`` of the evaluator on the last sample, over the positions not
kept yet). The refiner reads ``[init one-hot, 1 - trusted]`` and ``[last sample * kept,
1 - kept]`` (kept positions show the *latest* sample, so they are re-sampled every pass); its
logits are sampled at temperature 1 into the next map, which the evaluator re-scores. The last
sample is decoded. ``sampling=deterministic`` takes argmaxes and top-k masks instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from zoomsr.backbones.base import Backbone, seeded
from zoomsr.backbones.iter_arch import LQEncoder, SwinVQGAN, TokenRefine
from zoomsr.errors import ZoomSRError

Stage = Literal["hq", "token_pred", "refine"]


class ITERValueError(ZoomSRError, ValueError):
    """A configuration value or input the ITER backbone cannot work with."""


def gamma(r: float, schedule: str) -> float:
    """ITER's masking schedule ``gamma(r)``, the hidden fraction at progress ``r`` in [0, 1]."""
    if schedule == "linear":
        return 1.0 - r
    if schedule == "cosine":
        return math.cos(r * math.pi / 2)
    raise ITERValueError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")


def kept_budget(i: int, steps: int, n: int, schedule: str) -> int:
    """``k_i = int((1 - gamma(i / T)) N)``: the kept tokens ITER allows at pass ``i``.

    Computed in float32 as ITER does (``torch.Tensor([i / T])``), so the rounding agrees.
    """
    g = torch.tensor([i / steps], dtype=torch.float32)
    g = 1 - g if schedule == "linear" else torch.cos(g * math.pi / 2)
    return int((1 - g) * n)


def one_hot(idx: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, h, w)`` int -> ``(B, k, h, w)`` float."""
    return F.one_hot(idx.long(), k).permute(0, 3, 1, 2).float()


def flip_pad(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Pad bottom/right to a multiple by mirroring (ITER's ``test_iterative``)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    while x.shape[-2] < h + ph:
        x = torch.cat([x, torch.flip(x, [2])], 2)
    while x.shape[-1] < w + pw:
        x = torch.cat([x, torch.flip(x, [3])], 3)
    return x[..., : h + ph, : w + pw], h, w


class ITER(Backbone):
    """ITER on its Swin-VQGAN.

    Args:
        scale: upscaling factor, 1, 2, 4 or 8 (the LQ encoder has ``log2(8 / scale)`` stride-2
            levels); 1 for ``stage=hq``'s autoencoding.
        stage: ``hq`` | ``token_pred`` | ``refine`` (module docstring).
        vqgan_ckpt: the Swin-VQGAN's weights for ``token_pred`` / ``refine``: a zoomsr
            checkpoint of a ``stage=hq`` run or a ``.safetensors`` of its state dict
            (``zoomsr import-iter`` writes one). null: random from ``seed`` (wiring tests).
        nf, ch_mult, res_blocks, n_embed, embed_dim: the Swin-VQGAN (128, [1, 2, 2, 4], 2,
            512, 128).
        beta, vq_loss: the quantizer loss, ``legacy`` (taming, ITER: commitment 1, codebook
            ``beta``) or ``vqvae`` (VQ-VAE Eq. 3: codebook 1, commitment ``beta``).
        swin_dim, swin_blocks, swin_depth: the VQGAN's SwinLayers (256, 1 RSTB of 6 blocks).
        window, heads, resolution: every Swin layer's window (8), heads (8) and built-for grid
            (32 tokens; masks for other grids are computed).
        lq_channels, lq_swin_blocks, lq_swin_depth: the LQ encoder (64, 2 RSTBs of 6).
        demask_dim, demask_blocks, demask_depth: refiner and evaluator (256, 4 RSTBs of 6).
        steps, schedule, alpha: inference passes ``T`` (8), ``gamma`` (``linear``) and the
            evaluator's trust threshold (0.7; the paper's 0.5).
        token_temperature, mask_temperature: sampling temperatures (1, 1).
        sampling: ``iter`` (the release's stochastic sampling) | ``deterministic`` (argmax
            tokens, top-k kept positions).
        gumbel_lq_grad: ``token_pred`` / ``refine``: let the pixel losses on the LQ encoder's
            Gumbel-softmax decoding reach it. ITER casts that one-hot to ``long`` first, which
            cuts the gradient: False (default) reproduces that.
        seed: draws every random weight, and seeds :meth:`upscale`'s sampling.
    """

    is_learned = True

    size_error = ITERValueError

    def __init__(
        self,
        scale: int = 4,
        stage: Stage = "refine",
        vqgan_ckpt: str | None = None,
        nf: int = 128,
        ch_mult: list[int] | None = None,
        res_blocks: int = 2,
        n_embed: int = 512,
        embed_dim: int = 128,
        beta: float = 0.25,
        vq_loss: Literal["legacy", "vqvae"] = "legacy",
        swin_dim: int = 256,
        swin_blocks: int = 1,
        swin_depth: int = 6,
        window: int = 8,
        heads: int = 8,
        resolution: int = 32,
        lq_channels: int = 64,
        lq_swin_blocks: int = 2,
        lq_swin_depth: int = 6,
        demask_dim: int = 256,
        demask_blocks: int = 4,
        demask_depth: int = 6,
        steps: int = 8,
        schedule: Literal["linear", "cosine"] = "linear",
        alpha: float = 0.7,
        token_temperature: float = 1.0,
        mask_temperature: float = 1.0,
        sampling: Literal["iter", "deterministic"] = "iter",
        gumbel_lq_grad: bool = False,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        ch_mult = [1, 2, 2, 4] if ch_mult is None else list(ch_mult)
        self._check(scale, stage, vq_loss, schedule, sampling, steps, ch_mult)
        self.scale, self.stage, self.seed, self.n_embed = scale, stage, seed, n_embed
        self.steps, self.schedule, self.alpha, self.sampling = steps, schedule, alpha, sampling
        self.token_temperature, self.mask_temperature = token_temperature, mask_temperature
        self.gumbel_lq_grad = gumbel_lq_grad
        swin = {"window": window, "heads": heads, "resolution": resolution}
        with seeded(seed):
            self.vqgan = SwinVQGAN(
                nf, ch_mult, res_blocks, n_embed, embed_dim, beta, vq_loss == "legacy",
                swin_dim, swin_blocks, swin_depth, **swin,
            )  # fmt: skip
            if stage != "hq":
                down = int(math.log2(self.vqgan.factor / scale))
                self.lq_encoder = LQEncoder(
                    down, embed_dim, n_embed, lq_channels, lq_swin_blocks, lq_swin_depth, **swin
                )
                self.token_refine_net = TokenRefine(
                    n_embed, demask_dim, blocks=demask_blocks, depth=demask_depth, **swin
                )
        # LR sides are padded (mirrored) inside upscale to give whole windows of tokens.
        tile = self.vqgan.factor * window
        self.lr_multiple = tile // math.gcd(tile, scale)
        if stage != "hq":
            if vqgan_ckpt is not None:
                self._load_vqgan(vqgan_ckpt)
            self.vqgan.requires_grad_(False).eval()
            if stage == "token_pred":  # built (so the refine stage's keys exist), not trained
                self.token_refine_net.requires_grad_(False)

    def _load_vqgan(self, path: str) -> None:
        """Load the frozen Swin-VQGAN; a training checkpoint holds parameters only, so the
        fixed Swin buffers (position index, shift masks) may be absent, nothing else."""
        try:
            missing, unexpected = self.vqgan.load_state_dict(load_vqgan_state(path), strict=False)
        except RuntimeError as err:
            missing, unexpected = [str(err)], []
        buffers = {name for name, _ in self.vqgan.named_buffers()}
        missing = [k for k in missing if k not in buffers]
        if missing or unexpected:
            raise ZoomSRError(
                f"the Swin-VQGAN in '{path}' does not fit this backbone config (nf, ch_mult, "
                f"n_embed, embed_dim, swin_* must match): missing {missing[:3]}, "
                f"unexpected {list(unexpected)[:3]}"
            )

    @staticmethod
    def _check(scale, stage, vq_loss, schedule, sampling, steps, ch_mult) -> None:
        if stage not in ("hq", "token_pred", "refine"):
            raise ITERValueError(f"stage must be hq, token_pred or refine, got {stage!r}")
        factor = 2 ** (len(ch_mult) - 1)
        if stage != "hq" and (scale < 1 or factor % scale or scale & (scale - 1)):
            raise ITERValueError(
                f"ITER's LQ encoder needs a power-of-two scale dividing {factor}, got {scale}"
            )
        if vq_loss not in ("legacy", "vqvae"):
            raise ITERValueError(f"vq_loss must be 'legacy' or 'vqvae', got {vq_loss!r}")
        if schedule not in ("linear", "cosine"):
            raise ITERValueError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")
        if sampling not in ("iter", "deterministic"):
            raise ITERValueError(f"sampling must be 'iter' or 'deterministic', got {sampling!r}")
        if steps < 1:
            raise ITERValueError(f"steps (T) must be >= 1, got {steps}")

    @classmethod
    def check_weights(cls, config) -> None:
        """Start-up check (:mod:`zoomsr.tasks.preflight`): ``vqgan_ckpt`` exists when set."""
        if config.get("stage", "refine") != "hq" and config.get("vqgan_ckpt") is not None:
            _vqgan_path(config.vqgan_ckpt)

    def train(self, mode: bool = True) -> ITER:
        """Training mode for what trains; a frozen VQGAN stays in eval mode."""
        super().train(mode)
        if self.stage != "hq":
            self.vqgan.eval()
        return self

    # -- the pieces, for users and for the cross-check against ITER's code ----------------------
    def lq_logits(self, lr: torch.Tensor) -> torch.Tensor:
        """LR ``(B, 3, h, w)`` in [0, 1] -> token logits ``(B, n_embed, h s / 8, w s / 8)``."""
        return self.lq_encoder(lr.float())

    def lq_tokens(self, lr: torch.Tensor) -> torch.Tensor:
        """The LQ encoder's argmax tokens ``(B, h s / 8, w s / 8)``."""
        return self.lq_logits(lr).argmax(1)

    def reconstruct(self, img: torch.Tensor) -> torch.Tensor:
        """The Swin-VQGAN's reconstruction of ``(B, 3, H, W)`` in [0, 1] (sides a multiple of 8
        times the window, or the built-for size)."""
        return self.vqgan(img.float())[0]

    def p_right(self, tokens: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
        """The evaluator's ``p(token is right)`` ``(B, 1, h, w)``: the softmax of its 2-class
        head on the maps ``tokens`` and ``init`` ``(B, h, w)`` int."""
        crit = self.token_refine_net.token_crit_net
        return (
            crit(one_hot(tokens, self.n_embed), one_hot(init, self.n_embed))
            .float()
            .softmax(1)[:, 1:]
        )

    # -- training -----------------------------------------------------------------------------
    def _training_outputs(self, lr, hr, prompts, seeds) -> dict[str, torch.Tensor]:
        """Named tensors for the stage's loss terms (:meth:`Backbone.training_outputs`, sizes
        checked); images in [0, 1] unless ``*_signed`` ([-1, 1], for LPIPS). ``codes``
        ``(B, h, w)``: the tokens whose codebook usage is logged (the encoder's in ``hq``, the
        LQ encoder's argmax otherwise).

        - ``hq``: ``recon``, ``hr``, ``recon_signed``, ``hr_signed``, ``vq_loss``.
        - ``token_pred``: ``lq_logits`` ``(B, N, K)``, ``hr_tokens`` ``(B, N)``, ``sr`` (the
          VQGAN decoding of hard Gumbel-softmax samples of the logits), ``hr``.
        - ``refine``: the above plus :meth:`_refine_outputs`.
        - both: ``sr_all_signed`` / ``hr_all_signed``, the batch of ``sr`` (and ``refined``)
          and its targets, for ITER's one LPIPS term over both decodings.
        """
        hr = hr.float()
        if self.stage == "hq":
            recon, vq_loss, idx = self.vqgan(hr)
            return {
                "recon": recon, "hr": hr, "recon_signed": recon * 2 - 1, "hr_signed": hr * 2 - 1,
                "vq_loss": vq_loss, "codes": idx,
            }  # fmt: skip
        with torch.no_grad():
            gt = self.vqgan.encode(hr)[2]  # (B, h, w)
        logits = self.lq_encoder(lr.float()).float()  # (B, K, h, w)
        if logits.shape[-2:] != gt.shape[-2:]:
            raise ITERValueError(
                f"LQ tokens {tuple(logits.shape[-2:])} do not match the HR tokens "
                f"{tuple(gt.shape[-2:])}: HR sides must be multiples of {self.vqgan.factor}"
            )
        hard = F.gumbel_softmax(logits, tau=1.0, hard=True, dim=1)
        sr = self.vqgan.decode_onehot(hard if self.gumbel_lq_grad else hard.detach())
        out = {
            "lq_logits": logits.flatten(2).transpose(1, 2), "hr_tokens": gt.flatten(1),
            "sr": sr, "hr": hr, "codes": logits.detach().argmax(1),
        }  # fmt: skip
        both = [sr]
        if self.stage == "refine":
            out |= self._refine_outputs(logits.detach().argmax(1), gt, seeds)
            both.append(out["refined"])
        # ITER's LPIPS term reads the LQ and the refined decoding as one batch.
        out["sr_all_signed"] = torch.cat(both) * 2 - 1
        out["hr_all_signed"] = torch.cat([hr] * len(both)) * 2 - 1
        return out

    def _hidden_mask(self, gt: torch.Tensor, seeds: torch.Tensor | None) -> torch.Tensor:
        """ITER's training mask ``(B, 1, h, w)``, 1 = hidden: per sample
        ``max(1, int(cos(u pi / 2) N))`` random positions, ``u ~ U(0, 1)``."""
        b, h, w = gt.shape
        masks = []
        for i in range(b):
            g = None if seeds is None else torch.Generator().manual_seed(int(seeds[i]))
            rate = math.cos(torch.rand(1, generator=g).item() * math.pi / 2)
            k = max(1, int(rate * h * w))
            m = torch.zeros(h * w)
            m[torch.randperm(h * w, generator=g)[:k]] = 1.0
            masks.append(m.view(1, h, w))
        return torch.stack(masks).to(gt.device)

    def _refine_outputs(
        self, init_idx: torch.Tensor, gt: torch.Tensor, seeds: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """ITER's refine-stage terms (``TokenRefine.forward`` in training):

        - ``eval_init_logits`` ``(B, N, 2)`` / ``eval_init_targets`` ``(B, N)``: the evaluator on
          the LQ tokens, target "token equals HR" (a class-balanced CE).
        - ``refine_logits`` ``(B, N, K)``, ``hr_tokens``, ``refine_weight`` ``(B,)``: the
          refiner's CE over every position, weighted per sample by its hidden fraction. Its
          input: the HR tokens with a random hidden set, the LQ tokens and the evaluator's
          verdict on them.
        - ``eval_refined_logits`` / ``eval_refined_targets``: the evaluator on the refiner's
          argmax map (plain CE).
        - ``refined``: the VQGAN decoding of a hard Gumbel-softmax sample
          of the refiner's logits (its pixel / LPIPS terms reach the refiner).
        """
        k = self.n_embed
        crit, refiner = self.token_refine_net.token_crit_net, self.token_refine_net.token_refine_net
        init = one_hot(init_idx, k)
        eval_init = crit(init, init).float()  # (B, 2, h, w)
        init_mask = eval_init.detach().argmax(1, keepdim=True).float()
        hidden = self._hidden_mask(gt, seeds)  # (B, 1, h, w)
        visible = 1.0 - hidden
        shown = one_hot(gt, k) * visible
        logits = refiner(
            torch.cat([init, 1 - init_mask], 1), torch.cat([shown * visible, hidden], 1)
        ).float()  # (B, K, h, w)
        refined_idx = logits.detach().argmax(1)
        eval_refined = crit(one_hot(refined_idx, k), init).float()
        refined = self.vqgan.decode_onehot(F.gumbel_softmax(logits, tau=1.0, hard=True, dim=1))
        flat = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731  (B, C, h, w) -> (B, N, C)
        return {
            "eval_init_logits": flat(eval_init),
            "eval_init_targets": (gt == init_idx).long().flatten(1),
            "refine_logits": flat(logits),
            "refine_weight": hidden.mean(dim=(1, 2, 3)),
            "eval_refined_logits": flat(eval_refined),
            "eval_refined_targets": (gt == refined_idx).long().flatten(1),
            "refined": refined,
        }

    # -- inference ------------------------------------------------------------------------------
    def _upscale(
        self, lr: torch.Tensor, prompts: list[str] | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``(B, 3, h, w)`` in [0, 1] -> ``(B, 3, h s, w s)`` in [0, 1] (:meth:`Backbone.upscale`:
        eval mode, no grad, ``generator`` else one seeded by ``seed``).

        ``refine`` / ``token_pred``: :meth:`sample` (``token_pred``: the LQ tokens alone) and
        decode. ``hq``: the VQGAN's reconstruction of the bicubic image. Sides are mirrored up
        to whole attention windows first and cropped after (ITER's ``test_iterative``).
        ``generator`` (default: one seeded by ``seed``) drives the sampling.
        """
        if self.stage == "hq":
            x, h, w = flip_pad(self.upsample(lr), self.vqgan.factor * self.lr_multiple)
            return self.vqgan(x)[0][..., :h, :w]
        x, h, w = flip_pad(lr.float(), self.lr_multiple)
        logits = self.lq_encoder(x)
        if self.stage == "token_pred":
            idx = logits.argmax(1)
        else:
            idx = self.sample(logits, generator)["tokens"][-1]
        return self.vqgan.decode_indices(idx)[..., : h * self.scale, : w * self.scale]

    @torch.no_grad()
    def sample(
        self,
        lq_logits: torch.Tensor,
        generator: torch.Generator | None = None,
        steps: int | None = None,
    ) -> dict[str, list[torch.Tensor]]:
        """ITER's iterative evaluation and refinement (module docstring).

        Args:
            lq_logits: ``(B, K, h, w)`` from the LQ encoder.
            generator: CPU generator of every draw (default: seeded by ``seed``; else global).
            steps: ``T`` (default the configured one).

        Returns:
            ``tokens``: the LQ argmax map then the map after each pass that ran, ``(B, h, w)``;
            ``kept``: the kept mask ``(B, h, w)`` each of those passes showed the refiner
            (the trusted set at a sample's first pass); ``passes``: ``(B,)`` passes run per
            sample (a sample whose pass was skipped keeps its map and mask in that entry).
        """
        t = self.steps if steps is None else steps
        if generator is None and self.seed is not None:
            generator = torch.Generator().manual_seed(self.seed)
        crit, refiner = self.token_refine_net.token_crit_net, self.token_refine_net.token_refine_net
        k = self.n_embed
        init_idx = lq_logits.argmax(1)
        b, h, w = init_idx.shape
        init = one_hot(init_idx, k)
        trusted = (self.p_right(init_idx, init_idx) >= self.alpha).float()  # (B, 1, h, w)
        n_trusted = trusted.flatten(1).sum(1)  # (B,)
        kept, shown = trusted.clone(), init * trusted
        token, verdict = init, None
        started = torch.zeros(b, dtype=torch.bool, device=init.device)
        passes = torch.zeros(b, dtype=torch.long)
        out = {"tokens": [init_idx], "kept": [], "passes": passes}
        for i in range(t):
            budget = kept_budget(i, t, h * w, self.schedule)
            active = n_trusted <= budget  # ITER skips a pass while k_i < the trusted count
            if not bool(active.any()):
                continue
            if verdict is not None:  # after the first pass: grow the kept set from the verdict
                grown = self._grow(verdict, kept, budget, generator)
                kept = torch.where(started.view(b, 1, 1, 1), grown, kept)
            logits = refiner(
                torch.cat([init, 1 - trusted], 1), torch.cat([shown * kept, 1 - kept], 1)
            )
            sampled = self._sample_tokens(logits.float(), generator)
            on = active.view(b, 1, 1, 1)
            token = torch.where(on, sampled, token)
            shown = torch.where(on, sampled, shown)
            verdict = crit(token, init).float()
            started |= active
            passes += active.long().cpu()
            out["tokens"].append(token.argmax(1))
            out["kept"].append(kept[:, 0].bool())
        return out

    def _grow(
        self,
        verdict: torch.Tensor,
        kept: torch.Tensor,
        budget: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """ITER's ``sample_t``: add ``max(1, max(1, k_i) - |kept|)`` positions to ``kept``
        ``(B, 1, h, w)``, drawn without replacement with probability ``p(right)`` (temperature
        ``mask_temperature``) among those not kept; ``deterministic``: the most trusted."""
        b = kept.shape[0]
        p = (verdict / self.mask_temperature).softmax(1)[:, 1].flatten(1)  # (B, N)
        p = (p * (1 - kept.flatten(1))).cpu().double()
        grown = kept.flatten(1).clone()
        for j in range(b):
            n_new = max(1, max(1, budget) - int(kept[j].sum().item()))
            if self.sampling == "deterministic":
                idx = p[j].masked_fill(kept[j].flatten().cpu() > 0, -1.0).topk(n_new).indices
            else:
                idx = torch.multinomial(p[j] + 1e-8, n_new, generator=generator)
            grown[j, idx.to(grown.device)] = 1.0
        return grown.view_as(kept)

    def _sample_tokens(
        self, logits: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """One-hot ``(B, K, h, w)`` of tokens drawn from ``softmax(logits / token_temperature)``
        (``deterministic``: the argmax)."""
        b, k, h, w = logits.shape
        if self.sampling == "deterministic":
            return one_hot(logits.argmax(1), k)
        probs = (logits / self.token_temperature).softmax(1).permute(0, 2, 3, 1).reshape(-1, k)
        idx = torch.multinomial(probs.cpu().double(), 1, generator=generator).view(b, h, w)
        return one_hot(idx.to(logits.device), k)


# ---------------------------------------------------------------------------------------------
# Loading a trained Swin-VQGAN
# ---------------------------------------------------------------------------------------------


def _vqgan_path(path: str | Path) -> Path:
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ZoomSRError(
            f"Swin-VQGAN weights not found: '{p}' (backbone.vqgan_ckpt). Train it first "
            "(python train.py experiment=iter_hq_vqgan data.hr_dir=...) and pass its "
            "runs/train/<run>/checkpoints/last.ckpt, or import ITER's release with "
            "zoomsr import-iter (it writes vqgan.safetensors)."
        )
    return p


def load_vqgan_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The Swin-VQGAN state dict (keys without ``vqgan.``) from a ``stage=hq`` zoomsr
    checkpoint (its EMA weights when kept) or a ``.safetensors`` of ``SwinVQGAN``'s state."""
    from zoomsr.checkpoint import read_submodule_state

    return read_submodule_state(
        _vqgan_path(path), "vqgan.", "holds no Swin-VQGAN weights: is it a stage=hq checkpoint?"
    )
