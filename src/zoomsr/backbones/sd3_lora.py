"""One-step diffusion SR on Stable Diffusion 3 with LoRA (OSEDiff, as Chain-of-Zoom trains it).

One step (OSEDiff, Wu et al. 2024, Sec. 3.2, with SD3's rectified flow): the LR image is
bicubic-upsampled to the target size, encoded by the VAE, ``z = (E(x) - shift) * scaling``;
the transformer predicts the velocity ``v`` at ``t = 1000`` (``sigma = 1``) with the prompt's
embeddings; since ``z_sigma = (1 - sigma) z0 + sigma * eps`` and ``v = eps - z0``, the clean
latent is ``z0 = z - sigma * v = z - v``, decoded with ``x = D(z0 / scaling + shift)``.

LoRA adapters (peft) train; everything else is frozen and loaded from ``pretrained``:
- ``generator``: the SR model itself (transformer). CoZ's choice (``lora_targets=adaln``) is
  rank 4 on the adaLN-Zero modulation linears (``norm1.linear``, ``norm1_context.linear``);
  ``attention`` targets the attention projections instead; a list gives module names.
- ``encoder``: optional LoRA on every conv/linear of the VAE encoder (CoZ's ``inject_lora_vae``).
- ``regularizer`` (``vsd=True``): the "fake" score of variational score distillation, a second
  adapter on the SAME frozen transformer; with adapters disabled that transformer is the "real"
  score. CoZ keeps three full transformer copies for these (see docs/memory_sd3.md).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
import torch.utils.checkpoint
from torch import nn

from zoomsr.backbones.base import Backbone
from zoomsr.errors import ZoomSRError
from zoomsr.losses.vsd import VSDSettings
from zoomsr.zoom.memory import release_memory

Adapter = Literal["generator", "regularizer"] | None
GENERATOR, REGULARIZER, ENCODER = "generator", "regularizer", "encoder"
#: diffusers' SD3 LoRA default: every attention projection of the joint blocks.
ATTENTION_TARGETS = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
)
#: Prompt embeddings kept (least recently used dropped): with T5 one is up to 4.8 MB, and a run
#: whose prompts come from each crop (prompt=tags, prompt=vlm) would otherwise grow without end.
PROMPT_CACHE_SIZE = 256
#: ``text_encoders=on_demand`` warns once at this many loads (the prompts are not a fixed set).
ON_DEMAND_WARN_AFTER = 4
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HOW_TO_GET = (
    "Download a diffusers-layout SD3 folder (e.g. `huggingface-cli download "
    "stabilityai/stable-diffusion-3-medium-diffusers --local-dir DIR`, after accepting its "
    "licence on the Hub) and pass backbone.pretrained=DIR, or use debug=tiny for a tiny "
    "random model."
)


def resolve_pretrained(pretrained: str, use_t5: bool) -> Path:
    """The local folder of ``pretrained`` (a folder, an HF-cache id, or ``tiny``), checked.

    Raises:
        ZoomSRError: naming the missing folder or component and how to provide it. Never touches
            the network: a Hub id is looked up in the local cache only.
    """
    from zoomsr.backbones.sd3_tiny import TINY_ID, ensure_tiny_sd3

    if pretrained == TINY_ID:
        return ensure_tiny_sd3()
    folder = Path(pretrained).expanduser()
    if not folder.is_dir():
        if folder.is_absolute() or pretrained.count("/") != 1:
            raise ZoomSRError(
                f"SD3 weights not found: folder '{folder}' does not exist. {HOW_TO_GET}"
            )
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(pretrained, local_files_only=True))
        except Exception as err:
            from huggingface_hub.constants import HF_HUB_CACHE

            cached = Path(HF_HUB_CACHE) / f"models--{pretrained.replace('/', '--')}"
            raise ZoomSRError(
                f"SD3 weights not found: '{pretrained}' is neither a folder nor a model in the "
                f"Hugging Face cache (no '{cached}'). {HOW_TO_GET}"
            ) from err
    parts = ["transformer", "vae", "scheduler", "text_encoder", "text_encoder_2"]
    parts += ["tokenizer", "tokenizer_2"] + (["text_encoder_3", "tokenizer_3"] if use_t5 else [])
    missing = [p for p in parts if not (folder / p).is_dir()]
    if missing:
        raise ZoomSRError(
            f"SD3 folder '{folder}' lacks {', '.join(m + '/' for m in missing)} (a "
            f"diffusers-layout folder has all of {', '.join(parts)}). {HOW_TO_GET}"
        )
    return folder


def adaln_targets(transformer: nn.Module) -> list[str]:
    """CoZ's targets: every ``nn.Linear`` inside an ``AdaLayerNormZero`` (the adaLN-Zero
    modulation), in module order, which is also the order of CoZ's flat LoRA list."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    def inside_adapter(path: str) -> bool:  # peft's own Linears inside an injected layer
        return any(p == "base_layer" or p.startswith("lora_") for p in path.split("."))

    return [
        f"{name}.{child}"
        for name, module in transformer.named_modules()
        if type(module).__name__ == "AdaLayerNormZero"
        for child, sub in module.named_modules()
        if isinstance(sub, (nn.Linear, BaseTunerLayer)) and not inside_adapter(child)
    ]


class SD3LoRA(Backbone):
    """SD3 one-step super-resolver with LoRA adapters (see the module docstring).

    Args:
        pretrained: a diffusers-layout SD3 folder, a Hub id already in the local HF cache, or
            ``tiny`` (a tiny random model written once under ``$ZOOMSR_CACHE``).
        scale: zoom factor of one step (default 4).
        use_t5: load the T5 encoder; False feeds zeros in its place, as diffusers does.
        max_sequence_length: T5 tokens (CoZ: 512; diffusers' default 256).
        lora_targets: ``adaln`` (CoZ), ``attention``, or a list of module names.
        lora_rank: rank of the transformer adapters (CoZ: 4).
        lora_alpha: LoRA scale numerator; None = rank (scale 1, as CoZ's LoRA layers).
        vae_lora: also train a LoRA on the VAE encoder (CoZ: yes).
        vae_lora_rank, vae_lora_alpha: its rank and alpha (CoZ: 4 and peft's default 8).
        vsd: add the regularizer adapter and return what the VSD losses need.
        latent: ``mean`` of the VAE posterior, or a ``sample`` (seeded; CoZ samples).
        encode_shift: subtract the VAE's ``shift_factor`` at encode (default True: as CoZ trains
            and as :meth:`decode` adds it back); False: CoZ's inference, which skips it at encode.
        weight_dtype: dtype of the frozen transformer and text encoders (adapters are float32).
        vae_dtype: dtype of the VAE's frozen weights (default float32; CoZ keeps it in float16;
            under ``bf16-mixed`` its convolutions compute in bfloat16 either way).
        gradient_checkpointing: recompute transformer blocks and the VAE's encoder and decoder
            blocks in the backward pass (at 512 px the VAE's saved activations alone are ~4.9 GB
            without it, ~2 GB with it; ``benchmarks/RESULTS.md``).
        text_encoders: ``keep`` the CLIP (and T5) encoders loaded; ``on_demand`` loads them from
            ``pretrained`` only to encode prompts not yet in the embedding cache and frees them
            right after (1.6 GB fewer without T5, 11 GB with it, for the whole step; a run whose
            prompts change every step pays a reload from disk each time).
        seed: seed of the inference-time latent sample (``latent=sample``); None: torch's
            global RNG (CoZ).
    """

    refines_upsampled = True  # VAE-encodes the bicubic-upsampled LR (OSEDiff, CoZ)

    def __init__(
        self,
        pretrained: str,
        scale: int = 4,
        use_t5: bool = True,
        max_sequence_length: int = 256,
        lora_targets: Literal["adaln", "attention"] | list[str] = "adaln",
        lora_rank: int = 4,
        lora_alpha: float | None = None,
        vae_lora: bool = True,
        vae_lora_rank: int = 4,
        vae_lora_alpha: float = 8.0,
        vsd: bool = False,
        latent: Literal["mean", "sample"] = "sample",
        encode_shift: bool = True,
        weight_dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        vae_dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        gradient_checkpointing: bool = False,
        text_encoders: Literal["keep", "on_demand"] = "keep",
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if latent not in ("mean", "sample"):
            raise ZoomSRError(f"backbone.latent must be 'mean' or 'sample', got {latent!r}")
        for key, value in (("weight_dtype", weight_dtype), ("vae_dtype", vae_dtype)):
            if value not in DTYPES:
                raise ZoomSRError(f"backbone.{key} must be one of {list(DTYPES)}, got {value!r}")
        if text_encoders not in ("keep", "on_demand"):
            raise ZoomSRError(
                f"backbone.text_encoders must be 'keep' or 'on_demand', got {text_encoders!r}"
            )
        folder = resolve_pretrained(str(pretrained), use_t5)
        self.scale, self.latent, self.seed, self.vsd = scale, latent, seed, vsd
        self.encode_shift = encode_shift
        self.max_sequence_length = max_sequence_length
        self._folder, self._use_t5, self._dtype = folder, use_t5, DTYPES[weight_dtype]
        self.text_encoders_on_demand = text_encoders == "on_demand"
        self._encoder_loads = 0
        self._load(DTYPES[vae_dtype])
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        # HR sides must be multiples of vae_factor * patch_size (Backbone.upscale pads to it),
        # and at most pos_embed_max_size patches (the positional range; 192 in SD3-medium).
        patch = self.transformer.config.patch_size
        self.multiple = self.hr_multiple = self.vae_factor * patch
        self.size_multiple = self.multiple // math.gcd(self.multiple, scale)
        pos_range = self.transformer.config.pos_embed_max_size
        if pos_range is not None:
            self.max_input_size = pos_range * self.multiple // scale
        self._add_adapters(lora_targets, lora_rank, lora_alpha, vae_lora, vae_lora_rank,
                           vae_lora_alpha)  # fmt: skip
        self._adapter_state: Adapter = GENERATOR
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing(self._checkpoint)
            self.vae.enable_gradient_checkpointing(self._checkpoint_vae)
        self._prompt_cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    @classmethod
    def check_weights(cls, config) -> None:
        """The start-up check of ``train.py`` (:mod:`zoomsr.tasks.preflight`): the folder
        ``config.pretrained`` names exists with every part, before the heavy imports."""
        from zoomsr.backbones.sd3_tiny import TINY_ID

        if str(config.pretrained) != TINY_ID:  # the tiny folder is built on first use
            resolve_pretrained(str(config.pretrained), bool(config.get("use_t5", True)))

    @classmethod
    def inference_kwargs(cls, kwargs: dict) -> dict:
        """A chain asks a new prompt at every step: keep the text encoders loaded there."""
        return {**kwargs, "text_encoders": "keep"}

    # -- building ---------------------------------------------------------------------------
    def _load(self, vae_dtype: torch.dtype) -> None:
        """The frozen SD3 parts, each from its subfolder of ``pretrained`` (no pipeline download
        logic); the transformer (and text encoders) in ``weight_dtype``."""
        from diffusers import (
            AutoencoderKL,
            FlowMatchEulerDiscreteScheduler,
            SD3Transformer2DModel,
            StableDiffusion3Pipeline,
        )
        from transformers import AutoTokenizer

        folder, use_t5 = self._folder, self._use_t5
        self.transformer = SD3Transformer2DModel.from_pretrained(
            folder, subfolder="transformer", torch_dtype=self._dtype
        )
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=vae_dtype)
        kept = not self.text_encoders_on_demand
        encoders = self._text_encoder_parts() if kept else (None, None, None)
        self.text_encoder, self.text_encoder_2, self.text_encoder_3 = encoders
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
        self.transformer.requires_grad_(False)
        self.vae.requires_grad_(False)
        # diffusers' own prompt encoding (CLIP-L + CLIP-G hidden states, T5 or zeros, pooled).
        self._pipe = StableDiffusion3Pipeline(
            transformer=self.transformer,
            scheduler=scheduler,
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=AutoTokenizer.from_pretrained(folder / "tokenizer_2"),
            text_encoder_3=self.text_encoder_3,
            tokenizer_3=AutoTokenizer.from_pretrained(folder / "tokenizer_3") if use_t5 else None,
        )
        # The one step: the scheduler's single timestep (1000, sigma 1).
        scheduler.set_timesteps(1)
        self.register_buffer("t_one", scheduler.timesteps[:1].float().clone(), persistent=False)
        self.register_buffer("sigma_one", scheduler.sigmas[:1].float().clone(), persistent=False)
        # VSD noise levels: the scheduler's 1000 (shifted) training sigmas, as CoZ draws them.
        scheduler.set_timesteps(scheduler.config.num_train_timesteps)
        self.register_buffer(
            "train_sigmas", scheduler.sigmas[:-1].float().clone(), persistent=False
        )
        self.num_train_timesteps = scheduler.config.num_train_timesteps

    def _text_encoder_parts(self) -> tuple[nn.Module, nn.Module, nn.Module | None]:
        """CLIP-L, CLIP-G and (``use_t5``) T5, frozen, in ``weight_dtype``, from ``pretrained``."""
        from transformers import CLIPTextModelWithProjection, T5EncoderModel

        kw = {"torch_dtype": self._dtype}
        parts = [
            CLIPTextModelWithProjection.from_pretrained(self._folder / "text_encoder", **kw),
            CLIPTextModelWithProjection.from_pretrained(self._folder / "text_encoder_2", **kw),
            T5EncoderModel.from_pretrained(self._folder / "text_encoder_3", **kw)
            if self._use_t5
            else None,
        ]
        for part in parts:
            if part is not None:
                part.requires_grad_(False)
        return parts[0], parts[1], parts[2]

    @contextlib.contextmanager
    def _text_encoders_loaded(self, device: torch.device) -> Iterator[None]:
        """The text encoders inside the block: the kept ones, or (``text_encoders=on_demand``)
        loaded for it and freed after, with their memory handed back to the system."""
        if not self.text_encoders_on_demand:
            yield
            return
        self._encoder_loads += 1
        if self._encoder_loads == ON_DEMAND_WARN_AFTER:
            warnings.warn(
                f"backbone.text_encoders=on_demand has loaded the text encoders "
                f"{self._encoder_loads} times: the prompts change from step to step, so each "
                "step reads them from disk again; set backbone.text_encoders=keep",
                stacklevel=2,
            )
        parts = [p.to(device) if p is not None else None for p in self._text_encoder_parts()]
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        for name, part in zip(names, parts):
            setattr(self._pipe, name, part)
        try:
            yield
        finally:
            for name in names:
                setattr(self._pipe, name, None)
            del parts
            release_memory(device)

    def _add_adapters(
        self,
        targets: str | list[str],
        rank: int,
        alpha: float | None,
        vae_lora: bool,
        vae_rank: int,
        vae_alpha: float,
    ) -> None:
        from peft import LoraConfig

        if targets == "adaln":
            modules = adaln_targets(self.transformer)
        elif targets == "attention":
            modules = list(ATTENTION_TARGETS)
        elif isinstance(targets, str):
            raise ZoomSRError(
                f"backbone.lora_targets: 'adaln', 'attention' or a list, got {targets!r}"
            )
        else:
            modules = [str(t) for t in targets]
        # "gaussian": A ~ N(0, 1/r), B = 0, as CoZ's LoraInjectedLinear; the step starts as SD3's.
        self.lora_config = LoraConfig(
            r=rank,
            lora_alpha=rank if alpha is None else alpha,
            init_lora_weights="gaussian",
            target_modules=modules,
        )
        names = [GENERATOR] + ([REGULARIZER] if self.vsd else [])
        for name in names:
            with warnings.catch_warnings():  # peft warns that a second adapter is a second one
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                self.transformer.add_adapter(self.lora_config, adapter_name=name)
        self.vae_lora_config = None
        if vae_lora:
            encoder = [
                f"encoder.{n}"
                for n, m in self.vae.encoder.named_modules()
                if isinstance(m, (nn.Conv2d, nn.Linear))
            ]
            self.vae_lora_config = LoraConfig(
                r=vae_rank, lora_alpha=vae_alpha, init_lora_weights="gaussian",
                target_modules=encoder,
            )  # fmt: skip
            self.vae.add_adapter(self.vae_lora_config, adapter_name=ENCODER)
        # add_adapter leaves only the last adapter trainable: make every adapter train. peft
        # builds an adapter in its layer's dtype: trained weights are kept in float32 whatever
        # weight_dtype is (bf16 would lose AdamW's small updates); peft casts at the layer.
        for n, p in self.named_parameters():
            p.requires_grad_(".lora_" in n)
            if ".lora_" in n:
                p.data = p.data.float()

    # -- adapter switching -------------------------------------------------------------------
    def _lora_layers(self) -> Iterator[nn.Module]:
        from peft.tuners.tuners_utils import BaseTunerLayer

        return (m for m in self.transformer.modules() if isinstance(m, BaseTunerLayer))

    @contextlib.contextmanager
    def adapter(self, name: Adapter) -> Iterator[None]:
        """Run the transformer with adapter ``name`` (None: the frozen base, the "real" score).

        Only which adapter the forward uses changes: peft's ``set_adapter`` would also flip
        ``requires_grad`` and freeze the generator in the middle of a step.
        """
        previous = self._adapter_state
        self._set_adapter(name)
        try:
            yield
        finally:
            self._set_adapter(previous)

    def _set_adapter(self, name: Adapter) -> None:
        for layer in self._lora_layers():
            layer._disable_adapters = name is None
            if name is not None:
                layer._active_adapter = [name]
        self._adapter_state = name

    def _checkpoint(self, block: nn.Module, *args):
        """Gradient checkpointing that recomputes a block with the adapter it first ran with
        (the backward pass comes after the step switched adapters)."""
        state = self._adapter_state
        return torch.utils.checkpoint.checkpoint(
            block.__call__,
            *args,
            use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), self.adapter(state)),
        )

    def _checkpoint_vae(self, block: nn.Module, *args):
        """The VAE's blocks recomputed in the backward pass: each resnet and resampler of an
        encoder or decoder block on its own (at 512 px a decoder block's three resnets would be
        recomputed together, ~0.1-0.2 GB more at the peak), the mid block whole. The same
        calls in the same order as the blocks' own ``forward``."""
        from diffusers.models.unets.unet_2d_blocks import DownEncoderBlock2D, UpDecoderBlock2D

        def checkpoint(fn, *inputs):
            return torch.utils.checkpoint.checkpoint(fn, *inputs, use_reentrant=False)

        if not isinstance(block, (DownEncoderBlock2D, UpDecoderBlock2D)):
            return checkpoint(block.__call__, *args)
        h, temb = args[0], (args[1] if len(args) > 1 else None)
        for resnet in block.resnets:
            h = checkpoint(resnet.__call__, h, temb)
        for resample in (block.downsamplers if isinstance(block, DownEncoderBlock2D)
                         else block.upsamplers) or []:  # fmt: skip
            h = checkpoint(resample.__call__, h)
        return h

    # -- the pieces of one step --------------------------------------------------------------
    def prompt_embeddings(
        self, prompts: list[str] | None, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L, D)`` token and ``(B, D')`` pooled embeddings; each distinct prompt is
        encoded once and cached, the last :data:`PROMPT_CACHE_SIZE` used (None or missing ->
        the empty prompt)."""
        prompts = [p or "" for p in prompts] if prompts is not None else [""] * batch
        self.cache_prompts(prompts)
        device, dtype = self.t_one.device, self.transformer.dtype
        emb = torch.stack([self._prompt_cache[p][0].to(device, dtype) for p in prompts])
        pooled = torch.stack([self._prompt_cache[p][1].to(device, dtype) for p in prompts])
        return emb, pooled

    def cache_prompts(self, prompts: list[str | None]) -> None:
        """Encode the prompts not yet in the embedding cache, all in one pass (with
        ``text_encoders=on_demand``: one load of the encoders for all of them)."""
        wanted = {p or "" for p in prompts}
        for p in wanted & self._prompt_cache.keys():
            self._prompt_cache.move_to_end(p)
        todo = sorted(wanted - self._prompt_cache.keys())
        if not todo:
            return
        device = self.t_one.device
        with torch.no_grad(), self._text_encoders_loaded(device):
            embeds, _, pooled, _ = self._pipe.encode_prompt(
                prompt=todo, prompt_2=None, prompt_3=None, device=device,
                do_classifier_free_guidance=False,
                max_sequence_length=self.max_sequence_length,
            )  # fmt: skip
        for i, p in enumerate(todo):
            self._prompt_cache[p] = (embeds[i].detach(), pooled[i].detach())
        while len(self._prompt_cache) > max(PROMPT_CACHE_SIZE, len(wanted)):
            self._prompt_cache.popitem(last=False)

    def encode(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, c, H/f, W/f)`` scaled latent
        ``(E(x) - shift) * scaling``; ``noise`` (unit normal) draws a posterior sample."""
        dist = self.vae.encode(image.to(self.vae.dtype)).latent_dist
        z = dist.mean.float()
        if noise is not None:
            z = z + dist.std.float() * noise
        cfg = self.vae.config
        shift = (cfg.shift_factor or 0.0) if self.encode_shift else 0.0
        return (z - shift) * cfg.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse scaling of :meth:`encode`, then the VAE decoder: ``(B, 3, H, W)`` in ~[-1, 1]."""
        cfg = self.vae.config
        z = z.float() / cfg.scaling_factor + (cfg.shift_factor or 0.0)
        return self.vae.decode(z.to(self.vae.dtype)).sample.float()

    def velocity(
        self, z: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, pooled: torch.Tensor
    ) -> torch.Tensor:
        """The transformer's flow velocity ``v = eps - z0`` at timesteps ``t`` ``(B,)``."""
        dtype = self.transformer.dtype
        v = self.transformer(
            hidden_states=z.to(dtype),
            timestep=t.to(dtype),
            encoder_hidden_states=emb,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
        return v.float()

    def guided_velocity(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        cond: tuple[torch.Tensor, torch.Tensor],
        uncond: tuple[torch.Tensor, torch.Tensor],
        scale: float,
    ) -> torch.Tensor:
        """Classifier-free guidance ``v_uncond + s (v_cond - v_uncond)``, both branches in one
        batched forward (``[uncond; cond]``, as OSEDiff's ``distribution_matching_loss``).

        ``x0 = z_t - sigma v`` and ``eps = z_t + (1 - sigma) v`` are affine in ``v`` with the same
        coefficients for both branches, so the guidance is the same in v, eps or x0 form.
        ``scale == 1`` is the conditional score alone (one forward).
        """
        if scale == 1.0:
            return self.velocity(z, t, *cond)
        v = self.velocity(
            torch.cat([z, z]),
            torch.cat([t, t]),
            torch.cat([uncond[0], cond[0]]),
            torch.cat([uncond[1], cond[1]]),
        )
        v_uncond, v_cond = v.chunk(2)
        return v_uncond + scale * (v_cond - v_uncond)

    def one_step(
        self, lr: torch.Tensor, prompts: list[str] | None, noise: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """LR ``(B, 3, h, w)`` in [0, 1] -> (SR in ~[-1, 1] ``(B, 3, sh, sw)``, latent ``z0``)."""
        return self._one_step(self.to_model_range(self.upsample(lr)), prompts, noise)

    def _one_step(
        self, x: torch.Tensor, prompts: list[str] | None, noise: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The upsampled LR ``(B, 3, H, W)`` in [-1, 1] -> (SR in ~[-1, 1], latent ``z0``)."""
        emb, pooled = self.prompt_embeddings(prompts, x.shape[0])  # before any activation
        z = self.encode(x, noise)
        t = self.t_one.expand(x.shape[0])
        with self.adapter(GENERATOR):
            v = self.velocity(z, t, emb, pooled)
        z0 = z - self.sigma_one * v  # sigma = 1 at t = 1000: z0 = z - v
        return self.decode(z0), z0

    def _latent_noise(
        self, shape: tuple[int, ...], generators: list[torch.Generator] | None, device
    ) -> torch.Tensor | None:
        """Unit normal ``shape`` noise of the posterior sample: image ``i`` from
        ``generators[i]`` (None: torch's global RNG, as CoZ); None for ``latent=mean``."""
        if self.latent == "mean":
            return None
        if generators is None:
            return torch.randn(shape, device=device)
        return torch.stack([torch.randn(shape[1:], generator=g) for g in generators]).to(device)

    def _latent_shape(self, hr_size: tuple[int, int], batch: int) -> tuple[int, ...]:
        c = self.vae.config.latent_channels
        return (batch, c, hr_size[0] // self.vae_factor, hr_size[1] // self.vae_factor)

    # -- the Backbone contract ---------------------------------------------------------------
    def _refine(
        self, x: torch.Tensor, prompts: list[str] | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """One step on the upsampled LR ``(B, 3, H, W)`` in [-1, 1] (what CoZ's
        ``OSEDiff_SD3_TEST`` takes); the latent sample of every image is drawn from
        ``generator`` (None: torch's global RNG)."""
        gens = None if generator is None else [generator] * x.shape[0]
        noise = self._latent_noise(self._latent_shape(x.shape[-2:], x.shape[0]), gens, x.device)
        return self._one_step(x, prompts, noise)[0]

    def _training_outputs(
        self, lr, hr, prompts, seeds, vsd: VSDSettings | None = None
    ) -> dict[str, torch.Tensor]:
        """The OSEDiff training forward (:meth:`Backbone.training_outputs`, sizes checked).

        Args:
            lr, hr, prompts, seeds: as :meth:`Backbone.training_outputs`.
            vsd: how the VSD scores are queried (guidance, negative prompt, noise range); None:
                :class:`~zoomsr.losses.vsd.VSDSettings`' defaults. Used only with ``vsd=True``.

        Returns (images in [-1, 1], latents scaled):
            ``sr`` and ``hr`` ``(B, 3, H, W)``; ``latent`` ``z0`` ``(B, c, H/f, W/f)`` (with grad).
            With ``vsd``: ``x0_real`` (the frozen model, guided: ``v_neg + s (v_cond - v_neg)``)
            and ``x0_fake`` (the regularizer, prompt only) at the same ``vsd_zt``, a noised
            ``z0`` at timestep ``vsd_t`` ``(B,)`` (no grad); ``reg_x0`` (regularizer
            x0-prediction at another noised ``sg(z0)``, grad into the regularizer only) and
            ``reg_target`` ``= sg(z0)``.
        """
        gens = None
        if seeds is not None:
            gens = [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]
        settings = vsd or VSDSettings()
        # Every prompt of the step at once, before any activation is kept for backward.
        extra = [settings.negative_prompt] if self.vsd else []
        self.cache_prompts([*(prompts or [""] * lr.shape[0]), *extra])
        noise = self._latent_noise(self._latent_shape(hr.shape[-2:], hr.shape[0]), gens, lr.device)
        sr, z0 = self.one_step(lr, prompts, noise)
        out = {"sr": sr, "hr": hr.float() * 2 - 1, "latent": z0}
        if self.vsd:
            cond = self.prompt_embeddings(prompts, lr.shape[0])
            out |= self._vsd_outputs(z0, cond, settings, gens)
        return out

    def _noised(
        self,
        z0: torch.Tensor,
        generators: list[torch.Generator] | None,
        steps: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z_t = (1 - sigma) z0 + sigma eps`` at a training step drawn uniformly from
        ``steps = [k_min, k_max)``, counted from the least noisy of the scheduler's
        ``num_train_timesteps`` (default: all of them, as CoZ).

        Returns ``z_t``, the timesteps ``(B,)`` and ``sigma`` ``(B, 1, 1, 1)``.
        """
        b, n = z0.shape[0], self.num_train_timesteps
        lo, hi = steps or (0, n)
        if generators is None:
            k = torch.randint(lo, hi, (b,))
            eps = torch.randn_like(z0)
        else:
            k = torch.stack([torch.randint(lo, hi, (1,), generator=g)[0] for g in generators])
            eps = torch.stack([torch.randn(z0.shape[1:], generator=g) for g in generators])
        idx = n - 1 - k  # train_sigmas run from the noisiest (sigma = 1) down
        sigma = self.train_sigmas[idx.to(self.train_sigmas.device)].to(z0.device)
        s = sigma.view(b, 1, 1, 1)
        return (1 - s) * z0 + s * eps.to(z0), sigma * n, s

    def _vsd_outputs(self, z0, cond, settings: VSDSettings, generators) -> dict[str, torch.Tensor]:
        z0 = z0.detach()
        z_t, t, s = self._noised(z0, generators, (settings.t_min, settings.t_max))
        with torch.no_grad():
            with self.adapter(None):  # the frozen base: the "real" score, guided
                uncond = self.prompt_embeddings([settings.negative_prompt] * z0.shape[0], 0)
                v = self.guided_velocity(z_t, t, cond, uncond, settings.guidance_scale)
                x0_real = z_t - s * v
            with self.adapter(REGULARIZER):  # the "fake" score, tracking the generator
                x0_fake = z_t - s * self.velocity(z_t, t, *cond)
        z_t2, t2, s2 = self._noised(z0, generators)
        with self.adapter(REGULARIZER):
            reg_x0 = z_t2 - s2 * self.velocity(z_t2, t2, *cond)
        return {
            "x0_real": x0_real,
            "x0_fake": x0_fake,
            "vsd_zt": z_t,
            "vsd_t": t,
            "reg_x0": reg_x0,
            "reg_target": z0,
        }

    # -- adapters in and out -----------------------------------------------------------------
    def regularizer_parameters(self) -> list[nn.Parameter]:
        """The regularizer adapter's weights (its own optimizer group)."""
        tag = f".{REGULARIZER}."
        return [p for n, p in self.named_parameters() if p.requires_grad and tag in n]

    def export_lora(self, folder: str | Path) -> list[Path]:
        """Write the generator adapter as ``pytorch_lora_weights.safetensors`` (the layout
        ``StableDiffusion3Pipeline.load_lora_weights(folder)`` reads) and, when trained, the
        VAE-encoder adapter as ``vae_encoder_lora.safetensors`` (peft keys, config in metadata)."""
        import json

        from diffusers import StableDiffusion3Pipeline
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = get_peft_model_state_dict(self.transformer, adapter_name=GENERATOR)
        StableDiffusion3Pipeline.save_lora_weights(
            folder,
            transformer_lora_layers={k: v.detach().float().cpu() for k, v in state.items()},
            transformer_lora_adapter_metadata=self.lora_config.to_dict(),
        )
        paths = [folder / "pytorch_lora_weights.safetensors"]
        if self.vae_lora_config is not None:
            vae_state = get_peft_model_state_dict(self.vae, adapter_name=ENCODER)
            meta = {"lora_config": json.dumps(self.vae_lora_config.to_dict(), default=list)}
            paths.append(folder / "vae_encoder_lora.safetensors")
            save_file({k: v.detach().float().cpu().contiguous() for k, v in vae_state.items()},
                      str(paths[-1]), metadata=meta)  # fmt: skip
        return paths
