"""A local vision-language model describes each view (CoZ Sec. 3.2: VLM-generated prompts).

Qwen2.5-VL-3B-Instruct by default, through transformers' image-text-to-text auto class (any
chat VLM whose processor has a chat template loads the same way). The messages are CoZ's
(``inference_coz.py``): the instruction as the system message and the images, in order, as the
user message; one image with "What is in this image? ...", two with "The second image is a
zoom-in of the first image. ...". Each view is resized as CoZ's ``process_vision_info`` resizes
it (:func:`qwen_view`: sides rounded to multiples of 28, PIL bicubic), then generation as CoZ's
``generate(**inputs, max_new_tokens=128)``: the model's own generation config (Qwen2.5-VL's is
top-k 1, i.e. greedy, with its repetition penalty) and 128 new tokens by default. CoZ's
preference-aligned (GRPO) VLM ships as a peft LoRA adapter: ``adapter=<folder>`` loads it onto
the VLM and merges it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch import nn

from zoomsr.errors import ZoomSRError
from zoomsr.prompts.base import (
    MULTI_VIEW_INSTRUCTION,
    SINGLE_VIEW_INSTRUCTION,
    PromptSource,
    to_pil,
)
from zoomsr.prompts.hub import resolve_pretrained
from zoomsr.prompts.tiny import resolve_vlm

DType = Literal["auto", "float32", "bfloat16", "float16"]


def check_adapter(adapter: str) -> Path:
    """The peft adapter folder (``adapter_config.json`` + weights), or a clear error."""
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ZoomSRError(
            f"VLM LoRA adapter not found: '{path}' has no adapter_config.json. Pass "
            "prompt.adapter=<folder written by peft's save_pretrained> (CoZ: "
            "ckpt/VLM_LoRA/checkpoint-10000) or prompt.adapter=null."
        )
    if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise ZoomSRError(f"VLM LoRA adapter '{path}' has no adapter_model.safetensors.")
    return path


def fingerprint(folder: Path | None) -> list | None:
    """Names, sizes and modification times of a folder's files: a retrained adapter at the
    same path gets new cache keys."""
    if folder is None:
        return None
    return sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in folder.iterdir())


#: qwen_vl_utils' constants: a side is a multiple of 28 px (14 px patches, merged 2 x 2)
IMAGE_FACTOR, MIN_PIXELS, MAX_PIXELS = 28, 4 * 28 * 28, 16384 * 28 * 28


def qwen_size(height: int, width: int, max_pixels: int | None = None) -> tuple[int, int]:
    """The ``(h, w)`` qwen_vl_utils' ``smart_resize`` gives: each side rounded to the nearest
    multiple of 28 (at least 28), scaled down (sides floored) above ``max_pixels`` or up (sides
    ceiled) below ``MIN_PIXELS``. A 512 px view becomes 504 px: 18 x 18 = 324 vision tokens."""
    f, top = IMAGE_FACTOR, max_pixels or MAX_PIXELS
    h, w = max(f, round(height / f) * f), max(f, round(width / f) * f)
    if h * w > top:
        beta = math.sqrt(height * width / top)
        h, w = math.floor(height / beta / f) * f, math.floor(width / beta / f) * f
    elif h * w < MIN_PIXELS:
        beta = math.sqrt(MIN_PIXELS / (height * width))
        h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return h, w


def qwen_view(image: Image.Image, max_pixels: int | None = None) -> Image.Image:
    """``image`` resized to :func:`qwen_size` with PIL bicubic, as CoZ's VLM input."""
    h, w = qwen_size(image.height, image.width, max_pixels)
    return image if (h, w) == (image.height, image.width) else image.resize((w, h), Image.BICUBIC)


def messages(instruction: str, n_images: int) -> list[dict]:
    """CoZ's chat: the instruction as the system turn, the images as the user turn."""
    return [
        {"role": "system", "content": instruction},
        {"role": "user", "content": [{"type": "image"} for _ in range(n_images)]},
    ]


class VLMPrompt(PromptSource):
    """Prompts from a local VLM, one generation per image.

    Args:
        model: a folder, or a Hugging Face id present in the local cache (default
            ``Qwen/Qwen2.5-VL-3B-Instruct``). Checked when the source is built; loaded on the
            first view that is not cached. ``tiny`` is a tiny random Qwen2.5-VL (written once
            under ``$ZOOMSR_CACHE``), the policy of ``experiment=coz_grpo debug=tiny``.
        adapter: a peft LoRA adapter folder for the VLM (CoZ's GRPO-aligned one), or None.
        merge_adapter: merge the adapter into the weights after loading (as CoZ does).
        max_new_tokens: generation length (default 128, CoZ's script).
        do_sample: None (default): the model's generation config decides, as in CoZ's script
            (Qwen2.5-VL: top-k 1, greedy in effect); False: greedy; True: sample.
        temperature: sampling temperature when ``do_sample`` is True.
        dtype: weights' dtype: ``auto`` (as stored) | ``float32`` | ``bfloat16`` | ``float16``.
        max_pixels: cap on pixels per image in the processor (fewer vision tokens); None: the
            processor's default.
        instruction: the one-view instruction (default CoZ's).
        multiscale_instruction: the two-view instruction (default CoZ's).
        user_text, user_file, cache: see :class:`~zoomsr.prompts.base.PromptSource`.

    Raises:
        ZoomSRError: the model or the adapter folder is missing (at once, before any loading).
    """

    uses_model = True

    def __init__(
        self,
        model: str = "Qwen/Qwen2.5-VL-3B-Instruct",
        adapter: str | None = None,
        merge_adapter: bool = True,
        max_new_tokens: int = 128,
        do_sample: bool | None = None,
        temperature: float = 1.0,
        dtype: DType = "auto",
        max_pixels: int | None = None,
        instruction: str = SINGLE_VIEW_INSTRUCTION,
        multiscale_instruction: str = MULTI_VIEW_INSTRUCTION,
        user_text: str | None = None,
        user_file: str | None = None,
        cache: str | None = None,
    ) -> None:
        super().__init__(user_text, user_file, cache)
        if dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ZoomSRError(f"prompt.dtype must be auto|float32|bfloat16|float16, got {dtype}")
        self.model_path = resolve_pretrained(resolve_vlm(model), "VLM", "prompt.model")
        self.adapter_path = check_adapter(adapter) if adapter else None
        self.merge_adapter, self.max_new_tokens = merge_adapter, max_new_tokens
        self.do_sample, self.temperature, self.dtype = do_sample, temperature, dtype
        self.max_pixels = max_pixels
        self.instructions = {1: instruction, 2: multiscale_instruction}
        self.processor = None

    def settings(self) -> dict:
        return {
            "source": "vlm",
            "model": str(self.model_path.resolve()),
            "adapter": fingerprint(self.adapter_path),
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "temperature": self.temperature if self.do_sample else None,
            "vision_resize": "qwen_vl_utils",  # views resized as CoZ's (qwen_view)
            "dtype": self.dtype,
            "max_pixels": self.max_pixels,
            "instructions": self.instructions,
        }

    def load_model(self) -> nn.Module:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        extra = {} if self.max_pixels is None else {"max_pixels": self.max_pixels}
        dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        try:
            self.processor = AutoProcessor.from_pretrained(self.model_path, **extra)
            model = AutoModelForImageTextToText.from_pretrained(self.model_path, dtype=dtype)
        except (OSError, ValueError, KeyError) as err:
            raise ZoomSRError(f"cannot load the VLM from '{self.model_path}': {err}") from err
        if self.adapter_path is not None:
            model = self._attach_adapter(model)
        return model

    def _attach_adapter(self, model: nn.Module) -> nn.Module:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(self.adapter_path))
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ZoomSRError(
                f"the VLM LoRA adapter '{self.adapter_path}' does not fit the VLM "
                f"'{self.model_path}': {err}"
            ) from err
        return model.merge_and_unload() if self.merge_adapter else model

    def describe(self, views: list[torch.Tensor], step: int) -> list[str]:
        """Generate for each image: its views (wider first) with the matching instruction."""
        net = self.net  # loads model and processor on first use
        chat = self.processor.apply_chat_template(
            messages(self.instructions[len(views)], len(views)),
            tokenize=False,
            add_generation_prompt=True,
        )
        sampling = {} if self.do_sample is None else {"do_sample": self.do_sample}
        if self.do_sample:
            sampling["temperature"] = self.temperature
        texts = []
        for i in range(views[0].shape[0]):
            images = [qwen_view(to_pil(v[i]), self.max_pixels) for v in views]
            inputs = self.processor(text=[chat], images=images, return_tensors="pt")
            inputs = inputs.to(self.device)
            out = net.generate(**inputs, max_new_tokens=self.max_new_tokens, **sampling)
            new_tokens = out[:, inputs["input_ids"].shape[1] :]
            texts.append(self.processor.batch_decode(
                new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )[0])  # fmt: skip
        return texts
