"""Rewards of the prompt VLM's preference alignment (Chain-of-Zoom, Kim et al. 2025, Sec. 3.3).

CoZ aligns the prompt extractor with GRPO on three signals, summed with weights:

- **critic preference**: a critic VLM sees the two views (wider first) and the generated
  prompt and rates how well the prompt describes the zoomed view (CoZ's critic stands in for
  human preference);
- **phrase exclusion**: prompts that talk about the views instead of their content ("the
  first image", "the second image", "zoom-in", ...) are penalized; they are useless, even
  harmful, as text guidance for the SR model;
- **repetition penalty**: degenerate prompts that repeat the same words are penalized.

Each reward maps the ``G`` texts sampled for one ``(wide, zoom)`` pair to ``G`` values; the
GRPO module takes ``sum_i weight_i * reward_i``. The critic is a local VLM (a folder or an HF
cache id, any chat VLM that transformers loads) or any OpenAI-compatible endpoint.

A local critic whose model is the policy's (``model: policy``, or the same folder as
``grpo.module.policy``) holds no weights of its own: the GRPO module hands it the policy
(:meth:`Reward.share_policy`), and it scores with the policy's base model, the LoRA adapter
disabled for the call (peft ``disable_adapter()``), the same function as a second frozen copy
of those weights without the memory (Qwen2.5-VL-3B: 7.5 GB bf16).

The critic's score: a local critic is read without sampling, as the expectation of the digit
it would answer, ``sum_d p(d) d / 9`` over the next-token probabilities of ``0``..``9`` (a soft
score: no parsing failure, and ties between samples are rare); a remote critic answers in text
and the first integer in the answer is taken (``/ 9``, clipped to [0, 1]).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from zoomsr.errors import ZoomSRError
from zoomsr.prompts.base import to_pil

log = logging.getLogger("zoomsr")

#: Phrases about the views rather than their content (the paper's examples: "first image",
#: "second image"); matched case-insensitively as whole words.
EXCLUDED_PHRASES = (
    "first image",
    "second image",
    "zoom-in",
    "zoomed-in",
    "zoomed in",
    "zoom in",
)
CRITIC_KEY = "grpo.module.rewards.critic.model"
#: A critic ``model`` that means "the GRPO policy's own base weights" (see the module docstring).
POLICY = "policy"
#: The critic's question. ``{text}`` is the prompt being judged.
CRITIC_INSTRUCTION = (
    "The second image is a zoom-in of the first image. A super-resolution model will draw the "
    "second image's details from a text prompt. Rate how well the following prompt describes "
    "what is in the second image: 0 means wrong or useless, 9 means accurate and specific. "
    "Answer with one digit."
)


def words(text: str) -> list[str]:
    """Lower-case word tokens (letters, digits, apostrophes)."""
    return re.findall(r"[a-z0-9']+", text.lower())


def phrase_exclusion_reward(text: str, phrases: Sequence[str] = EXCLUDED_PHRASES) -> float:
    """1 when ``text`` contains none of ``phrases`` (whole words, any case), else 0."""
    low = " ".join(text.lower().split())
    for phrase in phrases:
        if re.search(rf"(?<![a-z0-9']){re.escape(phrase.lower())}(?![a-z0-9'])", low):
            return 0.0
    return 1.0


def repetition_penalty(text: str, ngram: int = 1) -> float:
    """``-(repeated n-grams) / (n-grams)``: 0 for a text without repeats, towards -1 for a loop.

    ``"cat, cat, dog"`` -> ``-1/3`` (unigrams: 3, distinct: 2). A text shorter than ``ngram``
    words gets 0.
    """
    toks = words(text)
    grams = [tuple(toks[i : i + ngram]) for i in range(len(toks) - ngram + 1)]
    if not grams:
        return 0.0
    return -(len(grams) - len(set(grams))) / len(grams)


@dataclass(frozen=True)
class SharedPolicy:
    """The GRPO policy as a reward may borrow it (a plain holder, not a module: a reward that
    keeps it registers no parameters of its own).

    Attributes:
        model: the peft model (base VLM + LoRA adapter); ``model.disable_adapter()`` gives the
            base model.
        folder: the folder its base weights were loaded from.
    """

    model: nn.Module
    folder: Path


class Reward(nn.Module):
    """A weighted reward: ``forward(texts, wide, zoom) -> (G,)`` float values.

    Args:
        weight: its weight in the summed reward.
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def share_policy(self, policy: SharedPolicy) -> None:
        """Called once by the GRPO module with its policy; a reward that can score with the
        policy's weights keeps them (default: it does not)."""

    def forward(self, texts: list[str], wide: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
        """``texts``: the ``G`` prompts sampled for views ``wide`` ``(3, H, W)`` and ``zoom``
        ``(3, h, w)`` in [0, 1]."""
        raise NotImplementedError


class PhraseExclusionReward(Reward):
    """:func:`phrase_exclusion_reward` per text.

    Args:
        weight: weight in the sum (default 1).
        phrases: the excluded phrases (default :data:`EXCLUDED_PHRASES`).
    """

    def __init__(self, weight: float = 1.0, phrases: Sequence[str] = EXCLUDED_PHRASES) -> None:
        super().__init__(weight)
        self.phrases = tuple(phrases)

    def forward(self, texts, wide, zoom):
        return torch.tensor([phrase_exclusion_reward(t, self.phrases) for t in texts])


class RepetitionPenalty(Reward):
    """:func:`repetition_penalty` per text.

    Args:
        weight: weight in the sum (default 1).
        ngram: the n-gram size counted (default 1: repeated words).
    """

    def __init__(self, weight: float = 1.0, ngram: int = 1) -> None:
        super().__init__(weight)
        if ngram < 1:
            raise ZoomSRError(f"repetition ngram must be >= 1, got {ngram}")
        self.ngram = ngram

    def forward(self, texts, wide, zoom):
        return torch.tensor([repetition_penalty(t, self.ngram) for t in texts])


def critic_messages(instruction: str, text: str) -> list[dict]:
    """The critic's chat: the instruction as system turn; both views and the prompt as user."""
    return [
        {"role": "system", "content": instruction},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": text}],
        },
    ]


def first_score(answer: str, top: int = 9) -> float | None:
    """The first integer in ``answer`` divided by ``top``, clipped to [0, 1]; None if none."""
    match = re.search(r"\d+", answer)
    return None if match is None else min(max(int(match.group()) / top, 0.0), 1.0)


class CriticReward(Reward):
    """The critic VLM's preference score in [0, 1] (see the module docstring).

    Args:
        weight: weight in the sum (default 1).
        backend: ``local`` (a transformers VLM from ``model``) | ``remote`` (an
            OpenAI-compatible endpoint at ``base_url`` serving ``model``).
        model: local folder or HF-cache id (``local``; ``tiny-critic``: a tiny random
            Qwen2.5-VL; ``policy``, or the policy's own folder: the GRPO policy's base weights,
            shared, no second copy), or the model name the server knows (``remote``).
        base_url, api_key_env, timeout, retries: the endpoint (``remote``; see
            :class:`~zoomsr.prompts.remote_vlm.RemoteVLMPrompt`).
        instruction: the critic's question (default :data:`CRITIC_INSTRUCTION`).
        dtype: local weights' dtype (``auto`` | ``float32`` | ``bfloat16`` | ``float16``); a
            shared critic runs in the policy's dtype (``auto``, or that dtype).
        max_pixels: cap on pixels per image in the local processor (its own, also when shared).
    """

    def __init__(
        self,
        weight: float = 1.0,
        backend: Literal["local", "remote"] = "local",
        model: str = "Qwen/Qwen2.5-VL-7B-Instruct",
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        retries: int = 2,
        instruction: str = CRITIC_INSTRUCTION,
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
        max_pixels: int | None = None,
    ) -> None:
        super().__init__(weight)
        if backend not in ("local", "remote"):
            raise ZoomSRError(f"critic backend must be local|remote, got {backend!r}")
        self.backend, self.instruction = backend, instruction
        self.dtype, self.max_pixels = dtype, max_pixels
        self.loader = self.client = self.folder = None
        self.shared: SharedPolicy | None = None
        self._processor = None  # a shared critic's own processor (its max_pixels)
        if backend == "local" and model != POLICY:
            from zoomsr.prompts.hub import resolve_pretrained
            from zoomsr.prompts.tiny import resolve_vlm
            from zoomsr.prompts.vlm import VLMPrompt

            # The prompt source's loading path, the error naming this key; the weights load
            # on the first score, so a critic that ends up shared never loads them.
            self.folder = resolve_pretrained(resolve_vlm(model), "critic VLM", CRITIC_KEY)
            self.loader = VLMPrompt(model=str(self.folder), dtype=dtype, max_pixels=max_pixels)
        elif backend == "remote":
            from zoomsr.prompts.remote_vlm import RemoteVLMPrompt

            self.client = RemoteVLMPrompt(
                base_url=base_url, model=model, api_key_env=api_key_env, max_tokens=8,
                timeout=timeout, retries=retries,
            )  # fmt: skip
        self._digits: torch.Tensor | None = None

    def share_policy(self, policy: SharedPolicy) -> None:
        """Score with ``policy``'s base weights when this critic's model is the policy's
        (``model: policy``, or the same folder); its own loader is dropped unloaded."""
        if self.backend != "local":
            return
        if self.folder is not None and self.folder.resolve() != policy.folder.resolve():
            return
        weights = next(policy.model.parameters()).dtype
        if self.dtype != "auto" and getattr(torch, self.dtype) != weights:
            raise ZoomSRError(
                f"the critic shares the policy's {weights} weights but asks for dtype="
                f"{self.dtype}: set {CRITIC_KEY.rsplit('.', 1)[0]}.dtype=auto"
            )
        self.shared, self.loader, self.folder = policy, None, policy.folder

    def forward(self, texts, wide, zoom):
        with torch.no_grad():
            if self.backend == "local":
                return self._local(texts, wide, zoom)
            return self._remote(texts, wide, zoom)

    def _digit_ids(self, tokenizer) -> torch.Tensor:
        if self._digits is None:
            ids = [tokenizer.encode(str(d), add_special_tokens=False) for d in range(10)]
            if any(len(i) != 1 for i in ids):
                raise ZoomSRError("the critic's tokenizer does not have one token per digit 0-9")
            self._digits = torch.tensor([i[0] for i in ids])
        return self._digits

    def _vlm(self) -> tuple[nn.Module, object, contextlib.AbstractContextManager]:
        """The model the local critic runs, its processor, and the context to run it in: its
        own frozen VLM, or the shared policy with the adapter disabled."""
        if self.shared is None:
            if self.loader is None:
                raise ZoomSRError(
                    f"{CRITIC_KEY}=policy scores with the GRPO policy's weights: use it inside "
                    "experiment=coz_grpo, or name a VLM folder"
                )
            return self.loader.net, self.loader.processor, contextlib.nullcontext()
        if self._processor is None:
            from transformers import AutoProcessor

            extra = {} if self.max_pixels is None else {"max_pixels": self.max_pixels}
            self._processor = AutoProcessor.from_pretrained(self.shared.folder, **extra)
        return self.shared.model, self._processor, self.shared.model.disable_adapter()

    def _local(self, texts, wide, zoom) -> torch.Tensor:
        net, processor, context = self._vlm()
        chats = [
            processor.apply_chat_template(
                critic_messages(self.instruction, f"Prompt: {t}"),
                tokenize=False,
                add_generation_prompt=True,
            )
            for t in texts
        ]
        images = [to_pil(wide), to_pil(zoom)] * len(texts)
        inputs = processor(text=chats, images=images, padding=True, return_tensors="pt")
        inputs = inputs.to(next(net.parameters()).device)
        mask = inputs["attention_mask"]
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).argmax(dim=1)  # the last real token, left or right padding
        with context:  # logits at each text's last token only: (G, 1, V), not (G, L, V)
            next_token = net(**inputs, logits_to_keep=last[:, None]).logits[:, 0].float()
        p = next_token[:, self._digit_ids(processor.tokenizer).to(next_token.device)].softmax(-1)
        return (p * torch.arange(10.0, device=p.device)).sum(-1).cpu() / 9.0

    def _remote(self, texts, wide, zoom) -> torch.Tensor:
        from zoomsr.prompts.remote_vlm import image_part

        client = self.client
        client._probe()  # fail fast when nothing listens (RemoteVLMPrompt's own check)
        scores = []
        for text in texts:
            body = {
                "model": client.model,
                "messages": [
                    {"role": "system", "content": self.instruction},
                    {
                        "role": "user",
                        "content": [
                            image_part(wide),
                            image_part(zoom),
                            {"type": "text", "text": f"Prompt: {text}"},
                        ],
                    },
                ],  # fmt: skip
                "max_tokens": client.max_tokens,
                "temperature": 0.0,
                "stream": False,
            }
            answer = client._complete(body)
            score = first_score(answer)
            if score is None:
                log.warning("critic answered without a number (%r): score 0", answer[:80])
            scores.append(0.0 if score is None else score)
        return torch.tensor(scores)
