"""A tiny random-initialized Qwen2.5-VL folder, for tests, benchmarks and trying the VLM
prompt path offline (``prompt=vlm prompt.model=<folder>``).

The real classes in the Hugging Face layout: :class:`Qwen2_5_VLForConditionalGeneration` from a
small config, a byte-level BPE tokenizer with Qwen's special tokens, a
:class:`Qwen2VLImageProcessor` capped at ``max_pixels`` per image, and a chat template in Qwen's
layout (``<|im_start|>role\\n...<|im_end|>``, an image as
``<|vision_start|><|image_pad|><|vision_end|>``). It loads through the same ``from_pretrained``
path as ``Qwen/Qwen2.5-VL-3B-Instruct``. Its answers are random bytes.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def write_tiny_vlm(
    folder: str | Path,
    hidden: int = 32,
    layers: int = 2,
    vision_hidden: int = 32,
    vision_depth: int = 2,
    max_pixels: int = 56 * 56,
    seed: int = 0,
) -> Path:
    """Write the model, tokenizer and processor to ``folder``; returns it.

    Args:
        hidden: language-model width (2 attention heads, 1 KV head; a multiple of 16).
        layers: language-model layers.
        vision_hidden, vision_depth: vision-tower width and blocks (the last one global).
        max_pixels: the processor's cap per image (14 px patches, 2x2 merged into one token:
            56 x 56 px -> 4 image tokens).
        seed: weight initialization.
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = Path(folder)
    tokenizer = _tokenizer()
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIAL_TOKENS}
    Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=max_pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(folder)
    half_head = hidden // 2 // 2  # head_dim / 2 rotary frequencies, split over (t, h, w)
    section = [half_head - 2 * (half_head * 3 // 8), half_head * 3 // 8, half_head * 3 // 8]
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e4,
                "mrope_section": section,
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": 2 * vision_hidden,
            "num_heads": 2,
            "out_hidden_size": hidden,
            "fullatt_block_indexes": [vision_depth - 1],
            "window_size": 56,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    return folder


#: Names that stand for a tiny random VLM (``module.policy=tiny``, a critic ``model: tiny-critic``):
#: the policy and the critic are different random models (seeds 0 and 1).
TINY_VLMS = {"tiny": 0, "tiny-critic": 1}


def ensure_tiny_vlm(name: str = "tiny") -> Path:
    """The tiny VLM folder ``$ZOOMSR_CACHE/<name>_qwen2_5_vl``, written first if missing
    (atomically: a temporary folder, then a rename)."""
    import shutil
    import tempfile

    from zoomsr.backbones.sd3_tiny import tiny_cache_dir

    folder = tiny_cache_dir().parent / f"{name}_qwen2_5_vl"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write_tiny_vlm(tmp, seed=TINY_VLMS[name])
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep theirs (same weights)
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_vlm(model: str) -> str:
    """``model``, or the tiny folder when it names a tiny VLM (:data:`TINY_VLMS`)."""
    return str(ensure_tiny_vlm(model)) if model in TINY_VLMS else model
