"""ITER: iterative token evaluation and refinement on a VQGAN (Chen et al., AAAI 2024,
arXiv:2312.05616), with VAR's multi-scale residual quantizer as an option.

Read top to bottom:

- :class:`LQEncoder`: the bicubic-upsampled LR image -> token logits over the codebook at the
  VQGAN's latent grid (one head per scale with the multi-scale quantizer).
- :class:`TokenTransformer`: a small pre-norm transformer over token embeddings. As the
  *refinement network* it reads the current token map (``K`` = the mask token) and the LQ
  encoder's initial tokens and predicts the clean token of every position; as the *evaluation
  network* it reads a token map and the initial tokens and predicts, per token, the logit of
  "this token is correct" (ITER Sec. 3.2-3.3).
- :class:`VQRefiner`, the :class:`~zoomsr.backbones.base.Backbone`. ``stage="vqgan"`` trains
  the autoencoder on HR images; ``stage="iter"`` freezes it (loaded from ``vqgan_ckpt``) and
  trains the three ITER networks.

Inference (:meth:`VQRefiner.upscale`), ITER Alg. 1 in our indexing: the LQ encoder's argmax
tokens ``S_0``; the evaluator scores them and the tokens it trusts (``p >= keep_threshold``) are
kept. Round ``i = 1..T`` keeps ``ceil((1 - gamma(i / T)) N)`` tokens: the kept set grows by the
not-yet-kept tokens with the highest evaluator score; the refiner re-predicts every token not
kept (kept tokens never change); the evaluator re-scores the new map. ``gamma(1) = 0`` keeps all
``N`` tokens in round ``T``, so ``T = 1`` is the LQ encoder alone and ``T`` rounds make at most
``T - 1`` refinement passes. The tokens are decoded by the VQGAN decoder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoomsr.backbones.base import Backbone, seeded
from zoomsr.backbones.var_vqvae import var_tokenizer
from zoomsr.backbones.vq import (
    VQGAN,
    ResBlock,
    conv_encoder,
    cosine_schedule,
    flatten_tokens,
    linear_schedule,
    unflatten_tokens,
)
from zoomsr.errors import ZoomSRError

#: Token targets that a cross-entropy ignores (positions the refiner saw unmasked).
IGNORE = -100


class VQRefinerValueError(ZoomSRError, ValueError):
    """A configuration value or input size the vq_refiner backbone cannot work with."""


class LQEncoder(nn.Module):
    """Bicubic-upsampled LR ``(B, 3, H, W)`` in [-1, 1] -> per-scale logits ``(B, L, K)``.

    A conv encoder with the VQGAN's downsampling (so it lands on the latent grid), ``blocks``
    ResBlocks per level, then per scale an area-pooling to the scale's shape and a 1x1 head.
    (ITER's LQ encoder reads the LR image itself and adds Swin layers; see the README.)
    """

    def __init__(
        self, channels: list[int], blocks: int, groups: int, dim: int, num_codes: int, scales: int
    ):
        super().__init__()
        self.features = conv_encoder(3, channels, dim, blocks, groups)
        self.mix = ResBlock(dim, dim, groups=1)
        self.heads = nn.ModuleList([nn.Conv2d(dim, num_codes, 1) for _ in range(scales)])

    def forward(self, x: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
        feat = self.mix(self.features(x))
        logits = []
        for head, shape in zip(self.heads, shapes, strict=True):
            f = feat if tuple(feat.shape[-2:]) == shape else F.adaptive_avg_pool2d(feat, shape)
            logits.append(head(f).flatten(2).transpose(1, 2))  # (B, h_k w_k, K)
        return torch.cat(logits, dim=1)


class AttentionBlock(nn.Module):
    """Pre-norm transformer block: (window) self-attention then an MLP, both residual.

    ``window=None``: every token attends to every token of the map (memory and time grow as
    ``L^2``). ``window=w``: each scale's grid is cut into ``w x w`` windows (padded at the
    bottom/right; padding is masked out of the keys), attention stays inside a window, and with
    ``shift`` the grid is first rolled by ``w // 2`` so that alternate blocks mix neighbouring
    windows (Swin, Liu et al. 2021; ITER's networks are Swin-based). Unlike Swin, the roll's
    wrap-around band is not masked.
    """

    def __init__(self, dim: int, heads: int, window: int | None, shift: bool):
        super().__init__()
        if dim % heads:
            raise VQRefinerValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.window, self.shift = heads, window, shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def _attend(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Multi-head attention within each row of ``x`` ``(N, T, D)``; ``mask`` ``(N, T)``
        marks the keys that may be attended."""
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))

    def _window_attend(self, g: torch.Tensor) -> torch.Tensor:
        """Window attention on one scale's grid ``(B, h, w, D)``."""
        b, h, w, d = g.shape
        ws = self.window
        if h <= ws and w <= ws:  # the whole map fits in one window
            return self._attend(g.reshape(b, h * w, d)).reshape(b, h, w, d)
        shift = ws // 2 if self.shift else 0
        if shift:
            g = torch.roll(g, (-shift, -shift), dims=(1, 2))
        ph, pw = (-h) % ws, (-w) % ws
        g = F.pad(g, (0, 0, 0, pw, 0, ph))
        nh, nw = (h + ph) // ws, (w + pw) // ws
        win = g.reshape(b, nh, ws, nw, ws, d).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, d)
        valid = torch.zeros(h + ph, w + pw, dtype=torch.bool, device=g.device)
        valid[:h, :w] = True
        valid = valid.reshape(nh, ws, nw, ws).permute(0, 2, 1, 3).reshape(1, nh * nw, ws * ws)
        mask = valid.expand(b, -1, -1).reshape(-1, ws * ws)
        out = self._attend(win, mask if (ph or pw) else None)
        out = out.reshape(b, nh, nw, ws, ws, d).permute(0, 1, 3, 2, 4, 5)
        out = out.reshape(b, h + ph, w + pw, d)[:, :h, :w]
        return torch.roll(out, (shift, shift), dims=(1, 2)) if shift else out

    def forward(self, x: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
        """``(B, L, D)`` -> ``(B, L, D)``; ``shapes`` are the token maps flattened in ``x``."""
        y = self.norm1(x)
        if self.window is None:
            y = self._attend(y)
        else:
            parts, start = [], 0
            for h, w in shapes:
                grid = y[:, start : start + h * w].reshape(y.shape[0], h, w, -1)
                parts.append(self._window_attend(grid).reshape(y.shape[0], h * w, -1))
                start += h * w
            y = torch.cat(parts, dim=1)
        x = x + y
        return x + self.mlp(self.norm2(x))


class TokenTransformer(nn.Module):
    """Pre-norm transformer over a flattened token map.

    Input embedding: ``tok(current) + init(initial) + scale_k``, then a depthwise 3x3 conv on each
    scale's grid added back (a conditional positional encoding, Chu et al. 2021), which works at
    any grid size, unlike a learned table.

    Args:
        num_codes: ``K``; the current map may also hold ``K``, the mask token.
        dim, depth, heads: transformer width, blocks, attention heads.
        out_dim: ``K`` for the refiner, 1 for the evaluator.
        scales: number of token scales.
        window: window side of the attention (alternate blocks shifted), None: global.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        depth: int,
        heads: int,
        out_dim: int,
        scales: int,
        window: int | None = 8,
    ):
        super().__init__()
        self.tok = nn.Embedding(num_codes + 1, dim)
        self.init = nn.Embedding(num_codes, dim)
        self.scale_emb = nn.Parameter(torch.zeros(scales, dim))
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.blocks = nn.ModuleList(
            [AttentionBlock(dim, heads, window, shift=i % 2 == 1) for i in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)

    def forward(
        self, current: torch.Tensor, initial: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """``(B, L)``, ``(B, L)`` int -> ``(B, L, out_dim)``."""
        x = self.tok(current) + self.init(initial)
        parts, start = [], 0
        for k, (h, w) in enumerate(shapes):
            p = x[:, start : start + h * w] + self.scale_emb[k]
            grid = p.transpose(1, 2).reshape(p.shape[0], -1, h, w)
            parts.append(p + self.pos(grid).flatten(2).transpose(1, 2))
            start += h * w
        x = torch.cat(parts, dim=1)
        for block in self.blocks:
            x = block(x, shapes)
        return self.head(self.norm(x))


class VQRefiner(Backbone):
    """ITER on a VQGAN as a zoomsr backbone.

    Args:
        scale: upscaling factor (default 4).
        stage: ``vqgan`` trains the autoencoder (``upscale`` then autoencodes the bicubic image);
            ``iter`` trains the LQ encoder, refiner and evaluator on the frozen VQGAN.
        vqgan_ckpt: stage ``iter``: the VQGAN's weights, a zoomsr checkpoint of a
            ``stage=vqgan`` run (its EMA weights) or a ``.safetensors`` file of ``VQGAN``'s state
            dict. ``null``: a random VQGAN drawn from ``seed`` (wiring tests, the tiny CPU run).
        channels, blocks, groups, embed_dim, codebook_size, beta, quantizer, patch_nums, phi,
            upsample: the :class:`~zoomsr.backbones.vq.VQGAN`.
        lq_channels, lq_blocks: the :class:`LQEncoder` (default: the VQGAN's ``channels``, 2).
        dim, depth, heads: refiner and evaluator transformers (the evaluator's ``eval_depth``).
        eval_depth: evaluator layers (default ``depth``).
        window: attention window side in tokens (Swin-style, alternate blocks shifted; default
            8, ITER's); None: global attention, whose cost grows as the square of the tokens.
            With ``msrq`` windows stay within a scale (global lets the scales attend each other).
        steps: ``T`` evaluation rounds at inference, 1..8 (T = 1: the LQ encoder alone).
        schedule: kept fraction ``1 - gamma(i / T)``, ``cosine`` (MaskGIT, ITER) or ``linear``.
        keep_threshold: tokens the evaluator gives ``p >= keep_threshold`` are kept from the
            start (ITER's adaptive inference, 0.5); > 1 disables it.
        token_temperature: 0 takes the refiner's argmax; > 0 samples ``softmax(logits / t)``.
        mask_sampling: ``topk`` grows the kept set by the highest scores; ``sample`` draws it
            with probabilities ``p`` (ITER), by the Gumbel top-k trick.
        corrupt_prob: training: fraction of the visible HR tokens of the refiner's input replaced
            by the LQ encoder's tokens, so it learns to read imperfect context (0: ITER).
        seed: initialises every weight, and seeds the sampling of ``upscale`` (when it samples).
        tokenizer: ``vqgan`` (zoomsr's :class:`~zoomsr.backbones.vq.VQGAN`) or ``var``: VAR's
            released VQVAE (:func:`~zoomsr.backbones.var_vqvae.var_tokenizer`: ``channels`` are
            its level widths, ``embed_dim`` its Cvae, ``patch_nums`` its scales; weights from
            ``zoomsr import-var`` as ``vqgan_ckpt``), e.g. ``experiment=iter_x4_var``.
    """

    is_learned = True

    refines_upsampled = True  # the LQ encoder reads the bicubic-upsampled LR
    size_error = VQRefinerValueError

    def __init__(
        self,
        scale: int = 4,
        stage: Literal["vqgan", "iter"] = "iter",
        vqgan_ckpt: str | None = None,
        channels: list[int] | None = None,
        blocks: int = 1,
        groups: int = 32,
        embed_dim: int = 64,
        codebook_size: int = 1024,
        beta: float = 0.25,
        quantizer: Literal["vq", "msrq"] = "vq",
        patch_nums: list[int] | None = None,
        phi: bool = True,
        upsample: str = "bicubic",
        lq_channels: list[int] | None = None,
        lq_blocks: int = 2,
        dim: int = 256,
        depth: int = 4,
        heads: int = 8,
        eval_depth: int | None = None,
        window: int | None = 8,
        steps: int = 8,
        schedule: Literal["cosine", "linear"] = "cosine",
        keep_threshold: float = 0.5,
        token_temperature: float = 0.0,
        mask_sampling: Literal["topk", "sample"] = "topk",
        corrupt_prob: float = 0.0,
        seed: int | None = None,
        tokenizer: Literal["vqgan", "var"] = "vqgan",
    ):
        super().__init__()
        if stage not in ("vqgan", "iter"):
            raise VQRefinerValueError(f"stage must be 'vqgan' or 'iter', got {stage!r}")
        if not 1 <= steps <= 8:
            raise VQRefinerValueError(f"steps (T) must be in [1, 8], got {steps}")
        if schedule not in ("cosine", "linear"):
            raise VQRefinerValueError(f"schedule must be 'cosine' or 'linear', got {schedule!r}")
        if mask_sampling not in ("topk", "sample"):
            raise VQRefinerValueError(f"mask_sampling must be topk or sample, got {mask_sampling}")
        if stage == "iter" and vqgan_ckpt is None and seed is None:
            raise VQRefinerValueError(
                "stage=iter with vqgan_ckpt=null draws a random VQGAN from `seed`; set seed "
                "(or point vqgan_ckpt at a stage=vqgan checkpoint) so a checkpoint can rebuild it"
            )
        channels = [64, 128, 128, 256] if channels is None else list(channels)
        patch_nums = [1, 2, 3, 4, 6, 8] if patch_nums is None else list(patch_nums)
        self.scale, self.stage, self.seed, self.steps = scale, stage, seed, steps
        self.schedule, self.keep_threshold = schedule, keep_threshold
        self.token_temperature, self.mask_sampling = token_temperature, mask_sampling
        self.corrupt_prob, self.codebook_size = corrupt_prob, codebook_size
        n_scales = len(patch_nums) if quantizer == "msrq" or tokenizer == "var" else 1
        with seeded(seed):
            self.vqgan = VQGAN(
                channels, blocks, groups, embed_dim, codebook_size, beta, quantizer,
                patch_nums, phi, upsample,
            ) if tokenizer != "var" else var_tokenizer(
                channels, blocks, groups, embed_dim, codebook_size, patch_nums, beta
            )  # fmt: skip
            if stage == "iter":
                self.lq_encoder = LQEncoder(
                    list(lq_channels or channels), lq_blocks, groups, dim, codebook_size, n_scales
                )
                self.refiner = TokenTransformer(
                    codebook_size, dim, depth, heads, codebook_size, n_scales, window
                )
                self.evaluator = TokenTransformer(
                    codebook_size, dim, eval_depth or depth, heads, 1, n_scales, window
                )
        self.factor = self.hr_multiple = self.vqgan.factor
        self.size_multiple = self.factor // math.gcd(self.factor, scale)
        if stage == "iter":
            if vqgan_ckpt is not None:
                try:
                    self.vqgan.load_state_dict(load_vqgan_state(vqgan_ckpt))
                except RuntimeError as err:
                    raise ZoomSRError(
                        f"the VQGAN in '{vqgan_ckpt}' does not fit this backbone config (its "
                        f"channels, embed_dim, codebook_size, quantizer must match): {err}"
                    ) from err
            self.vqgan.requires_grad_(False)
            self.vqgan.eval()

    # -- weights ------------------------------------------------------------------------------
    @classmethod
    def check_weights(cls, config) -> None:
        """Start-up check (:mod:`zoomsr.tasks.preflight`): ``vqgan_ckpt`` exists when set."""
        if config.get("stage", "iter") == "iter" and config.get("vqgan_ckpt") is not None:
            _vqgan_path(config.vqgan_ckpt)

    def train(self, mode: bool = True) -> VQRefiner:
        """Training mode for what trains; a frozen VQGAN stays in eval mode."""
        super().train(mode)
        if self.stage == "iter":
            self.vqgan.eval()
        return self

    # -- shapes ---------------------------------------------------------------------------------
    # -- training -------------------------------------------------------------------------------
    def _training_outputs(self, lr, hr, prompts, seeds) -> dict[str, torch.Tensor]:
        """Named tensors for the stage's loss terms.

        Stage ``vqgan``: ``recon`` and ``hr`` (``(B, 3, H, W)`` in [-1, 1]) and ``vq_loss``.

        Stage ``iter`` (``L`` tokens, ``K`` codes; targets are the frozen VQGAN's HR tokens):

        - ``lq_logits`` ``(B, L, K)`` / ``hr_tokens`` ``(B, L)``: the LQ encoder's token CE.
        - ``refine_logits`` ``(B, L, K)`` / ``refine_targets`` ``(B, L)``: the refiner's CE on
          the masked positions (others ``-100``). Each sample masks ``ceil(gamma(u) L)`` random
          positions, ``u ~ U(0, 1)``, cosine ``gamma`` (MaskGIT, ITER); its input is the HR
          tokens elsewhere (a ``corrupt_prob`` share replaced by the LQ tokens).
        - ``eval_logits`` ``(2B, L)`` / ``eval_targets`` ``(2B, L)`` in {0, 1}: the evaluator on
          the LQ tokens and on the refiner's (argmax-filled) map, target "token equals HR".

        ``seeds`` ``(B,)``: every random draw of a sample from its own generator.
        """
        y = hr.float() * 2.0 - 1.0
        if self.stage == "vqgan":
            recon, _, vq_loss = self.vqgan(y)
            return {"recon": recon, "hr": y, "vq_loss": vq_loss}
        shapes = self.vqgan.token_shapes(*hr.shape[-2:])
        with torch.no_grad():
            target = flatten_tokens(self.vqgan.encode_tokens(y))
        lq_logits = self.lq_encoder(self.to_model_range(self.upsample(lr)), shapes)
        init = lq_logits.argmax(-1).detach()
        masked, corrupt = self._training_masks(target.shape, seeds, target.device)
        visible = torch.where(corrupt, init, target)
        refine_logits = self.refiner(visible.masked_fill(masked, self.codebook_size), init, shapes)
        refined = torch.where(masked, refine_logits.detach().argmax(-1), visible)
        maps = torch.cat([init, refined])
        eval_logits = self.evaluator(maps, torch.cat([init, init]), shapes)[..., 0]
        return {
            "lq_logits": lq_logits,
            "hr_tokens": target,
            "refine_logits": refine_logits,
            "refine_targets": target.masked_fill(~masked, IGNORE),
            "eval_logits": eval_logits,
            "eval_targets": (maps == torch.cat([target, target])).float(),
        }

    def _training_masks(
        self, shape: torch.Size, seeds: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample: which tokens the refiner must predict, and which visible ones are
        replaced by the LQ encoder's; ``(B, L)`` bools."""
        b, length = shape
        masked = torch.zeros(b, length, dtype=torch.bool)
        corrupt = torch.zeros(b, length, dtype=torch.bool)
        for i in range(b):
            g = None if seeds is None else torch.Generator().manual_seed(int(seeds[i]))
            ratio = cosine_schedule(torch.rand(1, generator=g)).item()
            n = min(length, max(1, math.ceil(ratio * length)))
            masked[i, torch.randperm(length, generator=g)[:n]] = True
            corrupt[i] = torch.rand(length, generator=g) < self.corrupt_prob
        return masked.to(device), (corrupt & ~masked).to(device)

    # -- inference ------------------------------------------------------------------------------
    def _gamma(self, r: float) -> float:
        fn = cosine_schedule if self.schedule == "cosine" else linear_schedule
        return float(fn(r))

    def _refine(
        self,
        x: torch.Tensor,
        prompts: list[str] | None,
        generator: torch.Generator | None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """The bicubic-upsampled LR ``x`` in [-1, 1] -> the decoded tokens in [-1, 1]
        (:meth:`Backbone.upscale`). Stage ``iter``: :meth:`refine` the LQ encoder's tokens in
        ``steps`` (default ``T``; ``upscale(lr, steps=k)``) rounds and decode. Stage ``vqgan``:
        the VQGAN's reconstruction of the bicubic image. ``generator`` (else one seeded by
        ``seed``) drives any sampling; the default (argmax tokens, top-k masks) is deterministic.
        """
        if self.stage == "vqgan":
            return self.vqgan(x)[0]
        shapes = self.vqgan.token_shapes(*x.shape[-2:])
        tokens = self.refine(self.lq_encoder(x, shapes), shapes, generator, steps)[-1]
        return self.vqgan.decode_tokens(unflatten_tokens(tokens, shapes))

    @torch.no_grad()
    def refine(
        self,
        lq_logits: torch.Tensor,
        shapes: list[tuple[int, int]],
        generator: torch.Generator | None = None,
        steps: int | None = None,
        return_keep: bool = False,
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
        """ITER's iterative evaluation and refinement (module docstring).

        Args:
            lq_logits: ``(B, L, K)`` from the LQ encoder.
            shapes: the token maps' shapes.
            generator: source of the token / mask sampling; falls back to ``seed``.
            steps: rounds ``T`` (default the configured one).
            return_keep: also return the kept mask after each round.

        Returns:
            The token map ``(B, L)`` after each round, the LQ argmax first (and the kept masks,
            ``(B, L)`` bools, of the same rounds: all False before round 1).
        """
        steps = self.steps if steps is None else steps
        if not 1 <= steps <= 8:
            raise VQRefinerValueError(f"steps (T) must be in [1, 8], got {steps}")
        if generator is None and self.seed is not None:
            generator = torch.Generator().manual_seed(self.seed)
        init = lq_logits.argmax(-1)
        b, length = init.shape
        tokens = init.clone()
        score = self.evaluator(tokens, init, shapes)[..., 0].float().sigmoid()
        keep = score >= self.keep_threshold
        history, keeps = [tokens.clone()], [torch.zeros_like(keep)]
        for i in range(1, steps + 1):
            n_keep = math.ceil((1.0 - self._gamma(i / steps)) * length - 1e-9)
            grown = self._grow(keep, score, n_keep, generator)
            if bool(grown.all()):
                keep = grown
                history.append(tokens.clone())
                keeps.append(keep.clone())
                break
            if i > 1 and torch.equal(grown, keep):  # nothing new to trust: skip (ITER)
                history.append(tokens.clone())
                keeps.append(keep.clone())
                continue
            keep = grown
            logits = self.refiner(tokens.masked_fill(~keep, self.codebook_size), init, shapes)
            tokens = torch.where(keep, tokens, self._pick(logits, generator))
            score = self.evaluator(tokens, init, shapes)[..., 0].float().sigmoid()
            history.append(tokens.clone())
            keeps.append(keep.clone())
        return (history, keeps) if return_keep else history

    def _grow(
        self,
        keep: torch.Tensor,
        score: torch.Tensor,
        n_keep: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """``keep`` plus, per row, the best-scored not-kept positions up to ``n_keep`` kept."""
        rank_score = score.double()
        if self.mask_sampling == "sample":  # Gumbel top-k = sampling without replacement ~ p
            u = torch.rand(score.shape, generator=generator, dtype=torch.float64)
            gumbel = -(-u.clamp_min(1e-12).log()).log()
            rank_score = rank_score.clamp_min(1e-12).log() + gumbel.to(score.device)
        rank_score = rank_score.masked_fill(keep, float("inf"))
        order = rank_score.argsort(dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        return keep | (ranks < n_keep)

    def _pick(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Argmax tokens, or samples of ``softmax(logits / token_temperature)``."""
        if self.token_temperature <= 0:
            return logits.argmax(-1)
        probs = (logits.float() / self.token_temperature).softmax(-1)
        flat = probs.reshape(-1, probs.shape[-1]).cpu()
        picked = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
        return picked.to(logits.device)


# ---------------------------------------------------------------------------------------------
# Loading a trained VQGAN
# ---------------------------------------------------------------------------------------------


def _vqgan_path(path: str | Path) -> Path:
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ZoomSRError(
            f"VQGAN weights not found: '{p}' (backbone.vqgan_ckpt). Train the autoencoder first "
            "(python train.py experiment=vq_refiner_x4_vqgan data.hr_dir=...) and pass "
            "its runs/train/<run>/checkpoints/last.ckpt, or a .safetensors of VQGAN's state dict."
        )
    return p


def load_vqgan_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The VQGAN state dict from a ``stage=vqgan`` zoomsr checkpoint (EMA weights when kept) or
    a ``.safetensors`` file; a clear :class:`ZoomSRError` when missing or not a VQGAN."""
    from zoomsr.checkpoint import read_submodule_state

    return read_submodule_state(
        _vqgan_path(path), "vqgan.", "holds no VQGAN weights: is it a stage=vqgan checkpoint?"
    )
