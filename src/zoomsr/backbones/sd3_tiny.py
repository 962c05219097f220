"""A tiny random-initialized Stable Diffusion 3 folder, for tests and ``debug=tiny``.

Same classes and diffusers layout as ``stabilityai/stable-diffusion-3-medium-diffusers``
(``transformer/``, ``vae/``, ``text_encoder{,_2,_3}/``, ``tokenizer{,_2,_3}/``, ``scheduler/``,
``model_index.json``), with a 2-layer :class:`SD3Transformer2DModel`, a 2-level
:class:`AutoencoderKL` and 2-layer CLIP/T5 encoders (~0.3M parameters in all). It is written once
per cache folder (seeded, so every machine gets the same weights) and then loaded through the
very same ``from_pretrained`` path as the real model, so a checkpoint trained on it rebuilds the
identical base in ``evaluate.py``/``infer.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

#: Bump when the tiny architecture changes: a new folder is written, old ones stay valid.
TINY_VERSION = "v2"
#: The value of ``backbone.pretrained`` that selects the tiny model.
TINY_ID = "tiny"
SEED = 0
HIDDEN = 16  # CLIP-L and CLIP-G widths; their concatenation is the joint width 32 (= T5's)
JOINT = 2 * HIDDEN


def tiny_cache_dir() -> Path:
    """``$ZOOMSR_CACHE/tiny-sd3-<version>`` (default ``~/.cache/zoomsr``)."""
    root = Path(os.environ.get("ZOOMSR_CACHE", Path.home() / ".cache" / "zoomsr")).expanduser()
    return root / f"tiny-sd3-{TINY_VERSION}"


def ensure_tiny_sd3(folder: str | Path | None = None) -> Path:
    """The tiny SD3 folder, written first if missing (atomically: temp folder, then rename)."""
    folder = Path(folder) if folder is not None else tiny_cache_dir()
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write_tiny_sd3(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep theirs (same weights)
            if not (folder / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _byte_vocab() -> dict[str, int]:
    """A byte-level BPE vocabulary without merges: every byte symbol, alone and word-final."""
    from tokenizers.pre_tokenizers import ByteLevel

    symbols = sorted(ByteLevel.alphabet())  # the 256 symbols byte-level BPE maps bytes to
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab |= {f"{s}</w>": len(symbols) + i for i, s in enumerate(symbols)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    return vocab


def _t5_vocab() -> list[tuple[str, float]]:
    """A unigram vocabulary of single characters (T5's special tokens first)."""
    chars = "abcdefghijklmnopqrstuvwxyz0123456789,.-'"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in chars] + [(f"▁{c}", -2.5) for c in chars]
    return pieces


def write_tiny_sd3(folder: str | Path) -> Path:
    """Build the tiny components (seed :data:`SEED`) and ``save_pretrained`` them to ``folder``."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5Tokenizer,
    )

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        transformer = SD3Transformer2DModel(
            sample_size=16,
            patch_size=2,
            in_channels=4,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=JOINT,
            caption_projection_dim=16,
            pooled_projection_dim=JOINT,
            out_channels=4,
            pos_embed_max_size=192,  # as SD3-medium: 192 patches = 3072 px at f=8
        )
        # SD3's shift and scaling factors, so the tiny model exercises both.
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(8, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=32,
            shift_factor=0.0609,
            scaling_factor=1.5305,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
        vocab = _byte_vocab()
        eos = vocab["<|endoftext|>"]
        clip_kw = dict(
            vocab_size=len(vocab),
            hidden_size=HIDDEN,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=HIDDEN,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=eos,
            pad_token_id=eos,
        )
        text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(**clip_kw))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**clip_kw))
        t5_tokenizer = T5Tokenizer(vocab=_t5_vocab(), extra_ids=0, model_max_length=512)
        text_encoder_3 = T5EncoderModel(
            T5Config(
                vocab_size=len(t5_tokenizer),
                d_model=JOINT,
                d_kv=8,
                d_ff=32,
                num_layers=1,
                num_heads=2,
                relative_attention_num_buckets=8,
            )
        )
    clip_tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=clip_tokenizer,
        text_encoder_3=text_encoder_3,
        tokenizer_3=t5_tokenizer,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
