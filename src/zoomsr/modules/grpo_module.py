"""GRPOModule: preference alignment of the prompt VLM (Chain-of-Zoom, Sec. 3.3) with GRPO.

The policy is the ``prompt=vlm`` model (Qwen2.5-VL-3B-Instruct by default, loaded by
:class:`~zoomsr.prompts.vlm.VLMPrompt`'s own path) with a peft LoRA adapter; the frozen
reference is the same model with the adapter disabled (no second copy). Each training step,
for every (wide view, zoomed view) pair of the batch:

1. sample a group of ``group_size`` prompts with CoZ's two-view chat (the messages ``prompt=vlm``
   sends at inference), ``temperature`` / ``top_p``;
2. score them: ``r = sum_i weight_i * reward_i`` (:mod:`zoomsr.prompts.rewards`: the critic's
   preference, phrase exclusion, repetition penalty);
3. group-normalized advantages, then ``updates_per_batch`` optimizer steps on the clipped GRPO
   objective with a KL term to the reference (:mod:`zoomsr.losses.grpo`).

A local critic whose model is the policy's (``rewards.critic.model: policy``, or the same
folder) shares the policy's weights: it scores with the base model, adapter disabled
(:meth:`~zoomsr.prompts.rewards.Reward.share_policy`), so the step holds one copy of the VLM.
The phases of a step are named for Lightning's profiler (``grpo/sample``, ``grpo/reward``,
``grpo/logprobs``, ``grpo/loss_backward``, ``grpo/optimizer``; ``Trainer(profiler=...)``).

The adapter is saved in peft's format as ``<run>/VLM_LoRA/checkpoint-<step>/`` (CoZ's
``ckpt/VLM_LoRA/checkpoint-10000`` layout), the folder ``prompt=vlm prompt.adapter=DIR`` loads;
Lightning checkpoints keep the adapter (and optimizer) only, so ``ckpt_path=`` resumes.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

from zoomsr.losses.grpo import group_advantages, grpo_loss
from zoomsr.prompts.base import MULTI_VIEW_INSTRUCTION, to_pil
from zoomsr.prompts.hub import resolve_pretrained
from zoomsr.prompts.rewards import Reward, SharedPolicy
from zoomsr.prompts.tiny import resolve_vlm
from zoomsr.prompts.vlm import VLMPrompt, messages

#: The language model's attention projections (the vision tower's are named qkv/proj).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


@dataclass
class Rollout:
    """One group: the model inputs of the pair repeated ``G`` times and the sampled outputs."""

    inputs: dict[str, torch.Tensor]  # input_ids (G, P + T), attention_mask, pixel_values, ...
    prompt_len: int
    completion: torch.Tensor  # (G, T) sampled token ids
    mask: torch.Tensor  # (G, T) 1 up to and including the end token
    texts: list[str]
    old_logp: torch.Tensor | None = None  # (G, T)
    ref_logp: torch.Tensor | None = None


class GRPOModule(pl.LightningModule):
    """Trains a LoRA adapter of the prompt VLM with GRPO (see the module docstring).

    Args:
        policy: the VLM folder or HF-cache id (``prompt.model``'s default model); ``tiny``: a
            tiny random Qwen2.5-VL written once under ``$ZOOMSR_CACHE`` (tests, ``debug=tiny``).
        rewards: named :class:`~zoomsr.prompts.rewards.Reward` terms, each with its weight;
            each is offered the policy (:meth:`~zoomsr.prompts.rewards.Reward.share_policy`).
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``), over the adapter only.
        scheduler: optional ``optimizer -> LRScheduler``, stepped every optimizer step.
        group_size: ``G`` prompts sampled per pair (>= 2).
        max_new_tokens: prompt length (CoZ's inference: 32).
        temperature, top_p: sampling of the group.
        clip_eps: the ratio clip ``e`` (DeepSeekMath: 0.2).
        kl_beta: weight of the KL to the reference (DeepSeekMath: 0.04).
        updates_per_batch: optimizer steps per sampled batch (GRPO's ``mu``; 1: the ratio is 1
            at the single step and the clip never acts).
        max_grad_norm: gradient-norm clip of the adapter (None: none).
        lora_rank, lora_alpha, lora_dropout, lora_targets: the adapter (peft ``LoraConfig``).
        instruction: the policy's two-view instruction (default CoZ's, as ``prompt=vlm``).
        dtype, max_pixels: as ``prompt=vlm``.
        gradient_checkpointing: recompute the VLM's layers in the backward pass of the loss
            (:meth:`checkpointed_layers`).
        samples_every: steps between logging a table of sampled prompts and rewards (0: off).
    """

    def __init__(
        self,
        policy: str,
        rewards: dict[str, Reward],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        group_size: int = 4,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_p: float = 1.0,
        clip_eps: float = 0.2,
        kl_beta: float = 0.04,
        updates_per_batch: int = 1,
        max_grad_norm: float | None = 1.0,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        lora_targets: Sequence[str] = LORA_TARGETS,
        instruction: str = MULTI_VIEW_INSTRUCTION,
        dtype: str = "auto",
        max_pixels: int | None = None,
        gradient_checkpointing: bool = False,
        samples_every: int = 50,
    ) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model

        if group_size < 2:
            raise ValueError(f"group_size must be >= 2 (advantages are relative), got {group_size}")
        self.automatic_optimization = False  # several updates per sampled batch
        # Lightning's advice for these does not apply: the checkpoint after the update is the
        # one wanted, and the VLM is kept in eval mode on purpose (no dropout in sampling).
        for message in ("Using ModelCheckpoint with manual optimization", r"Found \d+ module"):
            warnings.filterwarnings("ignore", message=message)
        policy = str(resolve_pretrained(resolve_vlm(policy), "policy VLM", "grpo.module.policy"))
        source = VLMPrompt(model=policy, dtype=dtype, max_pixels=max_pixels, cache=None)
        base = source.load_model()
        self.processor, self.instruction = source.processor, instruction
        self.lora_config = LoraConfig(
            r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            target_modules=list(lora_targets), init_lora_weights=True,
        )  # fmt: skip
        self.policy = get_peft_model(base, self.lora_config)
        if gradient_checkpointing:
            base.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            # Non-reentrant checkpointing needs no input with requires_grad; the hooks that
            # force it would also hook the vision tower's patch embedding, so its whole graph
            # (no adapter there) would be kept and back-propagated.
            base.disable_input_require_grads()
        for reward in rewards.values():
            reward.share_policy(SharedPolicy(self.policy, Path(policy)))
        self.rewards = nn.ModuleDict(rewards)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.group_size, self.max_new_tokens = group_size, max_new_tokens
        self.temperature, self.top_p = temperature, top_p
        self.clip_eps, self.kl_beta = clip_eps, kl_beta
        self.updates_per_batch, self.max_grad_norm = updates_per_batch, max_grad_norm
        self.samples_every = samples_every
        self.strict_loading = False  # checkpoints hold the adapter only

    # -- rollouts ----------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, wide: torch.Tensor, zoom: torch.Tensor) -> Rollout:
        """Sample ``G`` prompts for one pair (``(3, H, W)``, ``(3, h, w)`` in [0, 1])."""
        chat = self.processor.apply_chat_template(
            messages(self.instruction, 2), tokenize=False, add_generation_prompt=True
        )
        enc = self.processor(text=[chat], images=[to_pil(wide), to_pil(zoom)], return_tensors="pt")
        enc = enc.to(self.device)
        out = self.policy.generate(
            **enc, max_new_tokens=self.max_new_tokens, do_sample=True,
            temperature=self.temperature, top_p=self.top_p,
            num_return_sequences=self.group_size, suppress_tokens=self.suppressed_tokens,
        )  # fmt: skip
        prompt_len = enc["input_ids"].shape[1]
        completion = out[:, prompt_len:]
        eos = self.processor.tokenizer.eos_token_id
        is_end = completion == eos
        mask = (is_end.cumsum(dim=1) - is_end.long()) == 0  # up to and including the first end
        g = self.group_size
        inputs = {
            "input_ids": out,
            "attention_mask": torch.cat([enc["attention_mask"].repeat(g, 1), mask.long()], 1),
        }
        for key, value in enc.items():  # the images once per sample; per-token types padded
            if key in ("input_ids", "attention_mask"):
                continue
            if value.shape == enc["input_ids"].shape:  # e.g. mm_token_type_ids: text = 0
                value = torch.nn.functional.pad(value, (0, completion.shape[1]))
                inputs[key] = value.repeat(g, 1)
            else:
                inputs[key] = torch.cat([value] * g)
        texts = self.processor.batch_decode(completion * mask, skip_special_tokens=True)
        texts = [" ".join(t.split()) for t in texts]
        return Rollout(inputs, prompt_len, completion, mask, texts)

    @functools.cached_property
    def suppressed_tokens(self) -> list[int]:
        """Qwen's image/video placeholder tokens (a sampled one would be read as an image slot)
        and the embedding rows no token has (Qwen2.5-VL: 151936 rows, 151665 tokens): a random
        or young policy can emit either. Looked up once (the vocabulary is fixed)."""
        tokenizer = self.processor.tokenizer
        vocab = tokenizer.get_vocab()
        rows = self.policy.get_input_embeddings().num_embeddings
        return [vocab[t] for t in VISION_TOKENS if t in vocab] + list(range(len(tokenizer), rows))

    def token_logprobs(self, ro: Rollout) -> torch.Tensor:
        """``(G, T)`` log-probabilities of the sampled tokens under the current model (logits of
        the last ``T + 1`` positions only: ``(G, T, V)``, not ``(G, P + T, V)``)."""
        seq, t = ro.inputs["input_ids"].shape[1], ro.completion.shape[1]
        # Positions as a tensor, not logits_to_keep=T+1: that keeps a strided slice of the
        # hidden states, and a strided (G, T+1, D) input makes the LM head a bmm against its
        # (V, D) weight expanded and copied G times (3B: 0.6 GB and ~2 s per sample and pass).
        keep = torch.arange(seq - t - 1, seq, device=self.device)
        out = self.policy(**ro.inputs, logits_to_keep=keep, use_cache=False)
        logits = out.logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        return logp.gather(-1, ro.completion[..., None]).squeeze(-1)

    @contextlib.contextmanager
    def checkpointed_layers(self) -> Iterator[None]:
        """Gradient checkpointing in effect for the loss pass (a no-op without
        ``gradient_checkpointing``). transformers checkpoints a layer only while its own
        ``training`` flag is set, and then drops the KV cache, so the VLM, in eval mode, would
        keep every layer's activations: the flag is set on the checkpointed layers alone, for the
        pass; their sub-modules (dropout) stay in eval mode: the same function as sampled."""
        from transformers.modeling_layers import GradientCheckpointingLayer

        layers = [
            m for m in self.policy.modules()
            if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing
        ]  # fmt: skip
        for layer in layers:
            layer.training = True
        try:
            yield
        finally:
            for layer in layers:
                layer.training = False

    def score(self, ro: Rollout, wide, zoom) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(G,)`` summed rewards, and each reward's values."""
        parts = {
            name: r(ro.texts, wide.cpu(), zoom.cpu()).float() for name, r in self.rewards.items()
        }
        total = sum(self.rewards[n].weight * v for n, v in parts.items())
        return total, parts

    # -- the step ----------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        profile = self.trainer.profiler.profile  # a no-op unless Trainer(profiler=...)
        rollouts, totals, parts = [], [], []
        for wide, zoom in zip(batch["wide"], batch["zoom"]):
            with profile("grpo/sample"):
                ro = self.rollout(wide, zoom)
            with profile("grpo/reward"):
                total, each = self.score(ro, wide, zoom)
            with profile("grpo/logprobs"), torch.no_grad():
                ro.old_logp = self.token_logprobs(ro)
                with self.policy.disable_adapter():  # the frozen reference
                    ro.ref_logp = self.token_logprobs(ro)
            rollouts.append(ro)
            totals.append(total)
            parts.append(each)
        rewards = torch.stack(totals).to(self.device)  # (N, G)
        advantages = group_advantages(rewards)
        opt = self.optimizers()
        for _ in range(self.updates_per_batch):
            opt.zero_grad()
            with profile("grpo/loss_backward"), self.checkpointed_layers():
                for ro, adv in zip(rollouts, advantages):
                    loss, stats = grpo_loss(self.token_logprobs(ro), ro.old_logp, ro.ref_logp,
                                            adv, ro.mask, self.clip_eps, self.kl_beta)  # fmt: skip
                    self.manual_backward(loss / len(rollouts))
            with profile("grpo/optimizer"):
                if self.max_grad_norm:
                    self.clip_gradients(opt, gradient_clip_val=self.max_grad_norm)
                opt.step()
                sched = self.lr_schedulers()
                if sched is not None:
                    sched.step()
        self._log_step(rewards, parts, loss, stats, rollouts, batch_idx)

    def _log_step(self, rewards, parts, loss, stats, rollouts, batch_idx: int) -> None:
        n = rewards.shape[0]
        logs = {"train/loss": loss.detach(), "train/reward": rewards.mean()}
        logs["train/reward_std"] = rewards.std(dim=1).mean()
        for name in parts[0]:
            logs[f"train/reward/{name}"] = torch.stack([p[name] for p in parts]).mean()
        logs |= {f"train/{k}": v for k, v in stats.items()}
        lengths = torch.stack([ro.mask.sum(1).float() for ro in rollouts])
        logs["train/length"] = lengths.mean()
        self.log_dict(logs, batch_size=n, prog_bar=False)
        if self.samples_every and batch_idx % self.samples_every == 0:
            self._log_samples(rollouts[0], rewards[0])

    def _log_samples(self, ro: Rollout, rewards: torch.Tensor) -> None:
        rows = [[self.global_step, t, float(r)] for t, r in zip(ro.texts, rewards)]
        for lg in self.loggers:
            if hasattr(lg, "log_text"):
                lg.log_text(key="train/samples", columns=["step", "prompt", "reward"], data=rows)

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    def train(self, mode: bool = True) -> GRPOModule:
        """The VLM stays in eval mode (no dropout: the sampled and the trained log-probabilities
        of a token must come from the same function); only the adapter's weights change."""
        return super().train(False)

    # -- adapter out, checkpoints ------------------------------------------------------------
    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if ".lora_" in k}

    def save_adapter(self, folder: str | Path) -> Path:
        """peft ``save_pretrained``: ``adapter_config.json`` + ``adapter_model.safetensors``."""
        folder = Path(folder)
        self.policy.save_pretrained(str(folder), safe_serialization=True)
        return folder

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = self.adapter_state()

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            root = Path(self.trainer.default_root_dir)
            self.save_adapter(root / "VLM_LoRA" / f"checkpoint-{self.global_step}")
