"""Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath, Eq. 3 and Sec. 4.1.2),
the objective Chain-of-Zoom aligns its prompt VLM with (Kim et al. 2025, Sec. 3.3).

For each input ``q`` the policy samples a group of ``G`` outputs ``o_1..o_G`` with rewards
``r_1..r_G``. Outcome supervision gives every token of ``o_i`` the group-normalized advantage

    A_i = (r_i - mean(r)) / (std(r) + eps),

and the loss, per token ``t`` of ``o_i`` (``rho = pi_theta / pi_old`` at that token), is

    -[ min(rho A_i, clip(rho, 1 - e, 1 + e) A_i) - beta KL_t ],
    KL_t = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1      (the unbiased k3 estimator),

averaged over the tokens of each output, then over the group.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``(N, G)`` rewards (``N`` groups of ``G``) -> ``(N, G)`` advantages ``(r - mean) /
    (std + eps)`` within each group (std with Bessel's correction, as DeepSeekMath's code; a
    group whose rewards are all equal gets zeros)."""
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (groups, G >= 2), got {tuple(rewards.shape)}")
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + eps)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    kl_beta: float = 0.04,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO loss of one group.

    Args:
        logp: ``(G, T)`` log-probabilities of the sampled tokens under the policy (with grad).
        old_logp: ``(G, T)`` the same under the policy that sampled them (no grad).
        ref_logp: ``(G, T)`` the same under the frozen reference (no grad).
        advantages: ``(G,)`` from :func:`group_advantages`.
        mask: ``(G, T)`` 1 for the output's tokens (up to and including its end token).
        clip_eps: ``e`` (DeepSeekMath: 0.2).
        kl_beta: ``beta`` (DeepSeekMath: 0.04).

    Returns:
        The scalar loss and ``kl`` (mean per token), ``clip_frac`` (share of tokens whose ratio
        was clipped), ``ratio`` (mean).
    """
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp.detach())
    adv = advantages.detach().to(logp.dtype)[:, None]
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    log_ref_ratio = ref_logp.detach() - logp
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    per_token = -(surrogate - kl_beta * kl)
    lengths = mask.sum(dim=1).clamp_min(1)
    loss = ((per_token * mask).sum(dim=1) / lengths).mean()
    n = mask.sum().clamp_min(1)
    clipped = ((ratio - 1).abs() > clip_eps).to(logp.dtype)
    stats = {
        "kl": (kl * mask).sum().detach() / n,
        "clip_frac": (clipped * mask).sum().detach() / n,
        "ratio": (ratio * mask).sum().detach() / n,
    }
    return loss, stats
