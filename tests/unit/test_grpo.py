"""GRPO pieces: each reward on known strings, the critic (tiny local VLM, and an endpoint),
group-normalized advantages, the clipped objective with its KL term."""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch

from tests.unit.test_prompts_remote import Server
from zoomsr.losses.grpo import group_advantages, grpo_loss
from zoomsr.prompts.rewards import (
    CriticReward,
    PhraseExclusionReward,
    RepetitionPenalty,
    first_score,
    phrase_exclusion_reward,
    repetition_penalty,
)

WIDE, ZOOM = torch.rand(3, 56, 56), torch.rand(3, 14, 14)


def test_phrase_exclusion_on_known_strings():
    assert phrase_exclusion_reward("red brick wall, ivy, moss") == 1.0
    assert phrase_exclusion_reward("The second image shows a brick wall") == 0.0
    assert phrase_exclusion_reward("a zoomed-in view of fur") == 0.0
    assert phrase_exclusion_reward("FIRST   IMAGE: a cat") == 0.0  # any case, any spacing
    assert phrase_exclusion_reward("firstimage of cat") == 1.0  # whole words only
    assert phrase_exclusion_reward("a cat", phrases=["cat"]) == 0.0
    r = PhraseExclusionReward(weight=2.0)(["a cat", "the first image"], WIDE, ZOOM)
    assert r.tolist() == [1.0, 0.0]


def test_repetition_penalty_on_known_strings():
    assert repetition_penalty("red brick wall, ivy") == 0.0
    assert repetition_penalty("cat, cat, dog") == pytest.approx(-1 / 3)
    assert repetition_penalty("wall wall wall wall") == pytest.approx(-3 / 4)
    assert repetition_penalty("") == 0.0
    # bigrams: (a b) (b a) (a b) -> one repeat of three
    assert repetition_penalty("a b a b", ngram=2) == pytest.approx(-1 / 3)
    assert RepetitionPenalty()(["x y", "x x"], WIDE, ZOOM).tolist() == [0.0, -0.5]


def test_first_score_parses_the_first_number():
    assert first_score("7") == pytest.approx(7 / 9)
    assert first_score("Score: 9/9") == 1.0
    assert first_score("12 out of 9") == 1.0  # clipped
    assert first_score("no idea") is None


def test_local_critic_is_the_expected_digit_of_a_real_vlm():
    critic = CriticReward(model="tiny-critic", max_pixels=56 * 56)
    texts = ["red brick wall", "a cat", "red brick wall"]
    scores = critic(texts, WIDE, ZOOM)
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()
    assert scores[0] == pytest.approx(scores[2].item(), abs=1e-6)  # deterministic per text
    assert scores[0] != pytest.approx(scores[1].item(), abs=1e-7)  # the text matters
    alone = critic(["a cat"], WIDE, ZOOM)  # padding in a batch does not change a score
    assert alone[0] == pytest.approx(scores[1].item(), abs=1e-5)


def test_remote_critic_sends_both_views_and_the_prompt():
    server = Server(reply="Score: 6")
    try:
        critic = CriticReward(backend="remote", base_url=server.url, model="critic-vl")
        assert critic(["ivy", "moss"], WIDE, ZOOM).tolist() == pytest.approx([6 / 9, 6 / 9])
        body = server.requests[0]["body"]
        assert body["model"] == "critic-vl"
        parts = body["messages"][1]["content"]
        assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
        assert parts[2]["text"] == "Prompt: ivy"
    finally:
        server.close()


def test_group_advantages_are_normalized_within_each_group():
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    a = group_advantages(r, eps=0.0 + 1e-12)
    std = torch.tensor([1.0, 2.0, 3.0, 4.0]).std()  # Bessel: sqrt(5/3)
    torch.testing.assert_close(a[0], (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / std)
    assert a[0].mean().abs() < 1e-6 and a[0].std() == pytest.approx(1.0, abs=1e-5)
    assert (a[1] == 0).all()  # a tied group teaches nothing
    # shifting or scaling a group's rewards leaves its advantages unchanged
    torch.testing.assert_close(group_advantages(r * 3 + 7), group_advantages(r), atol=1e-4,
                               rtol=1e-4)  # fmt: skip
    with pytest.raises(ValueError):
        group_advantages(torch.ones(2, 1))


def test_grpo_loss_clips_the_ratio_and_adds_the_kl():
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    # ratio = e^0.5 = 1.65 for sample 0 (A > 0: clipped to 1.2), e^-0.5 = 0.61 for sample 1
    # (A < 0: min(-0.61, -0.8) = -0.8, the clip binds too).
    logp = torch.tensor([[0.5, 0.5, 0.5], [-0.5, 9.0, 9.0]], requires_grad=True)
    loss, stats = grpo_loss(logp, old, ref_logp=logp.detach(), advantages=adv, mask=mask)
    assert loss.item() == pytest.approx(((-1.2) + 0.8) / 2)
    assert stats["kl"].item() == pytest.approx(0.0) and stats["clip_frac"].item() == 1.0
    loss.backward()
    assert logp.grad.abs().sum() == 0  # clipped everywhere: no policy gradient
    # Inside the clip range the gradient is -A * ratio / (length * G); masked tokens get none.
    logp2 = torch.zeros(2, 3, requires_grad=True)
    loss2, _ = grpo_loss(logp2, old, old, adv, mask, kl_beta=0.0)
    loss2.backward()
    torch.testing.assert_close(logp2.grad, torch.tensor([[-1 / 6] * 3, [0.5, 0.0, 0.0]]))
    # KL (k3) to a reference: e^(ref - logp) - (ref - logp) - 1, weighted by beta.
    ref = torch.full((2, 3), -1.0)
    loss3, stats3 = grpo_loss(torch.zeros(2, 3), old, ref, torch.zeros(2), mask, kl_beta=0.5)
    k3 = torch.exp(torch.tensor(-1.0)) + 1 - 1
    assert stats3["kl"].item() == pytest.approx(k3.item())
    assert loss3.item() == pytest.approx(0.5 * k3.item())


def test_views_need_the_two_view_chain(tmp_path):
    from zoomsr.data.zoom_views import ZoomViewPairs
    from zoomsr.errors import ZoomSRError
    from zoomsr.zoom.chain import ChainEngine

    chain = functools.partial(ChainEngine, rec_type="recursive", steps=1, process_size=16)
    with pytest.raises(ZoomSRError, match="rec_type=recursive_multiscale"):
        ZoomViewPairs(str(tmp_path), chain)


def test_missing_critic_weights_name_the_key(tmp_path):
    from zoomsr.errors import ZoomSRError

    with pytest.raises(ZoomSRError, match=r"critic VLM .*grpo\.module\.rewards\.critic\.model="):
        CriticReward(model=str(tmp_path / "no_such_vlm"))


def _grpo(critic: CriticReward):
    from zoomsr.modules.grpo_module import GRPOModule

    opt = functools.partial(torch.optim.AdamW, lr=1e-3)
    return GRPOModule(policy="tiny", rewards={"critic": critic}, optimizer=opt, max_pixels=56 * 56)


def test_a_critic_of_the_policys_model_scores_with_its_weights_adapter_off():
    from zoomsr.prompts.tiny import ensure_tiny_vlm

    critic = CriticReward(model="policy", max_pixels=56 * 56)
    module = _grpo(critic)
    # No weights of its own: the module's parameters are the policy's, once.
    assert critic.shared.model is module.policy and critic.loader is None
    assert sum(p.numel() for p in critic.parameters()) == 0
    assert sum(p.numel() for p in module.parameters()) == sum(
        p.numel() for p in module.policy.parameters()
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained adapter: the policy's outputs differ from the base's
        for name, p in module.policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    ids = torch.tensor([[1, 70, 71, 72, 73, 2]])
    before = module.policy(input_ids=ids).logits
    with module.policy.disable_adapter():
        base = module.policy(input_ids=ids).logits
    assert not torch.allclose(before, base, atol=1e-3)

    texts = ["red brick wall", "a cat", "ivy and moss"]
    scores = critic(texts, WIDE, ZOOM)
    separate = CriticReward(model=str(ensure_tiny_vlm("tiny")), max_pixels=56 * 56)
    torch.testing.assert_close(scores, separate(texts, WIDE, ZOOM), rtol=0, atol=1e-6)
    assert separate.shared is None and sum(p.numel() for p in separate.parameters()) > 0
    # The adapter is on again afterwards: the policy's outputs are as before.
    torch.testing.assert_close(module.policy(input_ids=ids).logits, before, rtol=0, atol=0)


def test_a_critic_shares_by_folder_and_only_the_policys_folder():
    from zoomsr.errors import ZoomSRError
    from zoomsr.prompts.tiny import ensure_tiny_vlm

    same = CriticReward(model=str(ensure_tiny_vlm("tiny")), max_pixels=56 * 56)
    other = CriticReward(model="tiny-critic", max_pixels=56 * 56)
    module = _grpo(same)
    other.share_policy(same.shared)
    assert same.shared.model is module.policy and same.loader is None
    assert other.shared is None and other.loader is not None  # a different model: its own
    with pytest.raises(ZoomSRError, match=r"dtype=auto"):
        _grpo(CriticReward(model="policy", dtype="bfloat16"))  # the tiny policy is float32
    with pytest.raises(ZoomSRError, match=r"critic\.model=policy"):
        CriticReward(model="policy")(["a cat"], WIDE, ZOOM)  # no GRPO policy to borrow


def test_the_loss_pass_recomputes_each_layer_and_keeps_no_vision_graph():
    from zoomsr.modules.grpo_module import GRPOModule

    opt = functools.partial(torch.optim.AdamW, lr=1e-3)
    module = GRPOModule(policy="tiny", rewards={"phrase": PhraseExclusionReward()}, optimizer=opt,
                        group_size=2, max_new_tokens=4, max_pixels=56 * 56,
                        gradient_checkpointing=True)  # fmt: skip
    torch.manual_seed(0)
    ro = module.rollout(WIDE, ZOOM)
    assert ro.completion.shape == (2, 4)  # sampling keeps its KV cache (layers in eval mode)
    net = module.policy.base_model.model.model
    calls, vision = [], []
    net.language_model.layers[0].self_attn.register_forward_hook(lambda *a: calls.append(1))
    net.visual.register_forward_hook(lambda m, i, o: vision.append(o.pooler_output.requires_grad))
    lora = [p for p in module.policy.parameters() if p.requires_grad]

    def grads(checkpointed: bool) -> list[torch.Tensor]:
        calls.clear()
        module.policy.zero_grad()
        with module.checkpointed_layers() if checkpointed else contextlib.nullcontext():
            module.token_logprobs(ro).sum().backward()
        return [p.grad.clone() for p in lora]

    recomputed = grads(True)
    assert len(calls) == 2 and vision == [False]  # forward + recompute; no vision-tower graph
    kept = grads(False)
    assert len(calls) == 1
    for a, b in zip(recomputed, kept):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in kept)
    assert not net.language_model.layers[0].training  # eval mode again after the pass
