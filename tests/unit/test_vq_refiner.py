"""vq_refiner: the quantizers (known answers), the VQGAN, ITER's training outputs, its iterative
sampling, the token losses, checkpoint pieces and clear errors. Tiny real models throughout."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from zoomsr.backbones.vq import (
    VQGAN,
    MultiScaleResidualQuantizer,
    VectorQuantizer,
    flatten_tokens,
    unflatten_tokens,
)
from zoomsr.backbones.vq_refiner import VQRefiner, VQRefinerValueError, load_vqgan_state
from zoomsr.errors import ZoomSRError
from zoomsr.losses.token import BinaryCrossEntropy, ScalarLoss, TokenCrossEntropy

CONF = Path(__file__).resolve().parents[2] / "conf" / "backbone" / "vq_refiner.yaml"

TINY = dict(
    scale=4,
    channels=[8, 16, 16],  # latent grid = image / 4
    groups=4,
    embed_dim=8,
    codebook_size=16,
    patch_nums=[1, 2, 4],
    lq_blocks=1,
    dim=16,
    depth=2,
    heads=2,
    window=4,
    steps=4,
    seed=0,
)


def tiny(**kw) -> VQRefiner:
    return VQRefiner(**(TINY | kw))


def diversify_codebook(model: VQRefiner, seed: int = 0) -> None:
    """Spread the random VQGAN's codes (its uniform +-1/K init maps most latents to a handful
    of codes), so that token targets are varied and a model must learn them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        cb = model.vqgan.quantizer.codebook.weight
        cb.copy_(torch.randn(cb.shape, generator=g) * 0.3)


# --- the plain quantizer ---------------------------------------------------------------------


def test_nearest_code_on_a_hand_made_codebook():
    vq = VectorQuantizer(4, 2, beta=0.25)
    with torch.no_grad():
        vq.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    # (B=1, C=2, h=1, w=5): points near each code, and one tie-free point near (1, 1).
    pts = torch.tensor([[0.1, -0.2], [0.9, 0.2], [-0.1, 0.7], [0.6, 0.8], [0.45, 0.1]])
    z = pts.t().reshape(1, 2, 1, 5)
    z_q, tokens, _ = vq(z)
    assert tokens[0].tolist() == [[[0, 1, 2, 3, 0]]]
    want = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(z_q, want.t().reshape(1, 2, 1, 5))


def test_straight_through_gradient_is_the_identity_and_loss_is_vqvae_eq3():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 3, beta=0.25)
    z = torch.randn(2, 3, 4, 5, requires_grad=True)
    z_q, tokens, loss = vq(z)
    weights = torch.randn_like(z)
    (z_q * weights).sum().backward()
    torch.testing.assert_close(z.grad, weights)  # d z_q / d z = I
    e = vq.embed(tokens[0])
    torch.testing.assert_close(z_q, e)  # the value is the code
    mse = F.mse_loss(e, z.detach())
    torch.testing.assert_close(loss, (1 + 0.25) * mse)  # ||sg[z]-e||^2 + beta ||z-sg[e]||^2


# --- VAR's multi-scale residual quantizer ----------------------------------------------------


def test_multiscale_error_never_grows_as_scales_are_added():
    """Area-down, nearest-up, no phi, a codebook holding 0: per block, the error after a scale is
    ``sum ||r - mean||^2 + n ||mean - c||^2`` and the nearest code c is at least as close to the
    block mean as 0 is, so the error cannot grow (and does shrink with a rich codebook)."""
    torch.manual_seed(0)
    q = MultiScaleResidualQuantizer(64, 4, patch_nums=[1, 2, 4, 8], phi=False, upsample="nearest")
    with torch.no_grad():
        q.codebook.weight.copy_(torch.randn(64, 4))
        q.codebook.weight[0] = 0.0
    z = torch.randn(3, 4, 8, 8)
    errors = [F.mse_loss(q(z, num_scales=k)[0], z).item() for k in range(1, 5)]
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.8 * errors[0], errors


def test_multiscale_token_shapes_and_decoding():
    torch.manual_seed(0)
    q = MultiScaleResidualQuantizer(32, 4, patch_nums=[1, 2, 3, 4, 6, 8])
    z = torch.randn(2, 4, 8, 16)
    z_q, tokens, loss = q(z)
    want = [(1, 2), (2, 4), (3, 6), (4, 8), (6, 12), (8, 16)]
    assert [tuple(t.shape) for t in tokens] == [(2, *s) for s in want]
    assert q.token_shapes(8, 16) == want and q.token_shapes(8, 8)[0] == (1, 1)
    # The token maps alone give back the quantized latent (what the decoder sees).
    torch.testing.assert_close(q.decode_tokens(tokens), z_q, atol=1e-5, rtol=1e-5)
    assert loss.ndim == 0 and loss > 0
    # Flatten / unflatten round-trip of a multi-scale token map.
    flat = flatten_tokens(tokens)
    assert flat.shape == (2, sum(h * w for h, w in want))
    assert all(torch.equal(a, b) for a, b in zip(unflatten_tokens(flat, want), tokens, strict=True))


@pytest.mark.parametrize("quantizer", ["vq", "msrq"])
def test_vqgan_shapes(quantizer):
    torch.manual_seed(0)
    vq = VQGAN([8, 16], 1, 4, 8, 16, quantizer=quantizer, patch_nums=[1, 2, 4])
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    recon, tokens, loss = vq(x)
    assert recon.shape == x.shape and loss.ndim == 0
    assert [tuple(t.shape[-2:]) for t in tokens] == vq.token_shapes(16, 24)
    assert tuple(tokens[-1].shape[-2:]) == (8, 12)  # the latent grid (x2 downsampling)
    torch.testing.assert_close(vq.decode_tokens(tokens), recon, atol=1e-5, rtol=1e-5)


# --- training outputs and what trains ---------------------------------------------------------


@pytest.mark.parametrize("quantizer", ["vq", "msrq"])
def test_training_outputs_shapes_and_targets(quantizer):
    model = tiny(quantizer=quantizer)
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    out = model.training_outputs(lr, hr, seeds=torch.tensor([5, 6]))
    # An 8x8 grid; msrq's patch_nums [1, 2, 4] (last = the grid) give 2x2, 4x4 and 8x8 maps.
    n = 64 if quantizer == "vq" else 4 + 16 + 64
    assert sum(h * w for h, w in model.vqgan.token_shapes(32, 32)) == n
    assert out["lq_logits"].shape == (2, n, 16) and out["refine_logits"].shape == (2, n, 16)
    assert out["hr_tokens"].shape == (2, n) and out["eval_logits"].shape == (4, n)
    hr_tokens = flatten_tokens(model.vqgan.encode_tokens(hr * 2 - 1))
    assert torch.equal(out["hr_tokens"], hr_tokens)  # targets: the frozen VQGAN's HR tokens
    masked = out["refine_targets"] != -100
    assert torch.equal(out["refine_targets"][masked], hr_tokens[masked])
    assert masked.any(dim=1).all()
    init = out["lq_logits"].argmax(-1)
    torch.testing.assert_close(out["eval_targets"][:2], (init == hr_tokens).float())
    # Per-sample seeds: the same seed gives the same mask, in any batch position.
    again = model.training_outputs(lr.flip(0), hr.flip(0), seeds=torch.tensor([6, 5]))
    assert torch.equal(again["refine_targets"].flip(0), out["refine_targets"])


def test_only_the_stage_parameters_get_gradients():
    model = tiny()
    out = model.training_outputs(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32))
    loss = (
        TokenCrossEntropy()(out)
        + TokenCrossEntropy("refine_logits", "refine_targets")(out)
        + BinaryCrossEntropy()(out)
    )
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("vqgan."):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    prefixes = {k.split(".")[0] for k in model.trainable_state_dict()}
    assert prefixes == {"lq_encoder", "refiner", "evaluator"}
    assert not model.vqgan.training  # the frozen VQGAN stays in eval mode
    model.train()
    assert model.refiner.training and not model.vqgan.training

    stage1 = tiny(stage="vqgan")
    out = stage1.training_outputs(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32))
    assert set(out) == {"recon", "hr", "vq_loss"}
    (F.l1_loss(out["recon"], out["hr"]) + ScalarLoss()(out)).backward()
    assert all(p.grad is not None for p in stage1.parameters())
    assert {k.split(".")[0] for k in stage1.trainable_state_dict()} == {"vqgan"}


def test_trainable_state_round_trip_rebuilds_the_same_model():
    a, b = tiny(), tiny(seed=1)
    b_vq = {k: v.clone() for k, v in b.vqgan.state_dict().items()}
    b.load_trainable_state_dict(a.trainable_state_dict())
    assert not torch.equal(b.vqgan.encoder[0].weight, a.vqgan.encoder[0].weight)
    assert all(torch.equal(b.vqgan.state_dict()[k], v) for k, v in b_vq.items())
    c = tiny()  # same seed: the random VQGAN comes back, so a checkpoint rebuilds the model
    c.load_trainable_state_dict(a.trainable_state_dict())
    lr = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(c.upscale(lr), a.upscale(lr))


# --- iterative sampling ----------------------------------------------------------------------


@pytest.mark.parametrize("quantizer", ["vq", "msrq"])
def test_one_round_is_the_lq_encoder_argmax_decoded(quantizer):
    model = tiny(quantizer=quantizer)
    lr = torch.rand(2, 3, 8, 12)
    x = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1
    shapes = model.vqgan.token_shapes(32, 48)
    tokens = model.lq_encoder(x, shapes).argmax(-1)
    want = ((model.vqgan.decode_tokens(unflatten_tokens(tokens, shapes)) + 1) / 2).clamp(0, 1)
    out = model.upscale(lr, steps=1)
    assert out.shape == (2, 3, 32, 48)
    torch.testing.assert_close(out, want)
    assert not torch.equal(model.upscale(lr, steps=4), out)  # refinement does change tokens


def test_sampling_is_deterministic_given_the_seed():
    model = tiny(token_temperature=1.0, mask_sampling="sample", keep_threshold=2.0)
    lr = torch.rand(2, 3, 8, 8)
    a = model.upscale(lr, generator=torch.Generator().manual_seed(3))
    b = model.upscale(lr, generator=torch.Generator().manual_seed(3))
    c = model.upscale(lr, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(model.upscale(lr), model.upscale(lr))  # no generator: `seed`


@pytest.mark.parametrize("sampling", [("topk", 0.0), ("sample", 1.0)])
def test_kept_tokens_never_change_and_the_kept_set_follows_the_schedule(sampling):
    mask_sampling, temperature = sampling
    model = tiny(steps=6, mask_sampling=mask_sampling, token_temperature=temperature)
    diversify_codebook(model)
    lr = torch.rand(2, 3, 8, 8)
    shapes = model.vqgan.token_shapes(32, 32)
    logits = model.lq_encoder(model.to_model_range(model.upsample(lr)), shapes)
    gen = torch.Generator().manual_seed(0)
    history, keeps = model.refine(logits, shapes, gen, return_keep=True)
    length = history[0].shape[1]
    assert torch.equal(history[0], logits.argmax(-1))
    assert keeps[-1].all()  # round T keeps everything
    changed = False
    for i in range(1, len(history)):
        assert (keeps[i] | ~keeps[i - 1]).all()  # the kept set only grows
        # Tokens kept in round i are those of round i - 1.
        assert torch.equal(history[i][keeps[i]], history[i - 1][keeps[i]])
        want = math.ceil((1 - math.cos(math.pi / 2 * i / 6)) * length - 1e-9)
        assert (keeps[i].sum(1) >= want).all()
        changed |= not torch.equal(history[i], history[i - 1])
    assert changed  # not a model that keeps everything from the start


def test_tokens_the_evaluator_trusts_are_kept_from_the_start():
    model = tiny(keep_threshold=0.5)
    with torch.no_grad():  # an evaluator that trusts every token: p = sigmoid(20)
        model.evaluator.head.weight.zero_()
        model.evaluator.head.bias.fill_(20.0)
    lr = torch.rand(1, 3, 8, 8)
    assert torch.equal(model.upscale(lr), model.upscale(lr, steps=1))
    model.keep_threshold = 2.0  # trust nothing up front: the refiner re-predicts tokens
    assert not torch.equal(model.upscale(lr), model.upscale(lr, steps=1))


def test_tiny_model_overfits_one_image_tokens():
    torch.manual_seed(0)
    model = tiny(depth=1, dim=32, window=None)
    diversify_codebook(model)
    hr = F.interpolate(torch.rand(1, 3, 8, 8), size=(32, 32), mode="bilinear")
    lr = F.avg_pool2d(hr, 4)
    losses = [
        TokenCrossEntropy(),
        TokenCrossEntropy("refine_logits", "refine_targets"),
        BinaryCrossEntropy(),
    ]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    target = flatten_tokens(model.vqgan.encode_tokens(hr * 2 - 1))
    assert target.unique().numel() >= 4  # a real classification problem

    def accuracy() -> tuple[float, float]:
        shapes = model.vqgan.token_shapes(32, 32)
        with torch.no_grad():
            logits = model.lq_encoder(model.to_model_range(model.upsample(lr)), shapes)
            final = model.refine(logits, shapes)[-1]
        lq = (logits.argmax(-1) == target).float().mean().item()
        return lq, (final == target).float().mean().item()

    before = accuracy()
    for step in range(300):
        out = model.training_outputs(lr, hr, seeds=torch.tensor([step]))
        loss = sum(term(out) for term in losses)
        opt.zero_grad()
        loss.backward()
        opt.step()
    lq_acc, final_acc = accuracy()
    assert before[0] < 0.6 and lq_acc > 0.9 and final_acc > 0.9, (before, lq_acc, final_acc)


# --- losses ------------------------------------------------------------------------------------


def test_token_cross_entropy_ignores_unmasked_positions():
    logits = torch.randn(2, 5, 7)
    target = torch.tensor([[1, -100, 3, -100, 0], [-100, -100, 6, 2, -100]])
    keep = target != -100
    want = F.cross_entropy(logits[keep], target[keep])
    out = {"refine_logits": logits, "refine_targets": target}
    got = TokenCrossEntropy("refine_logits", "refine_targets", weight=2.0)(out)
    torch.testing.assert_close(got, 2.0 * want)


def test_balanced_binary_cross_entropy_weighs_both_classes_equally():
    # One "correct" token among four: each class carries half of the loss.
    logits, target = torch.tensor([[0.0, 1.0, 2.0, 3.0]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")[0]
    want = (per[0] * 0.5 / 0.25 + per[1:].sum() * 0.5 / 0.75) / 4
    out = {"eval_logits": logits, "eval_targets": target}
    torch.testing.assert_close(BinaryCrossEntropy()(out), want)
    torch.testing.assert_close(BinaryCrossEntropy(balanced=False)(out), per.mean())
    with pytest.raises(KeyError, match="eval_logits"):
        BinaryCrossEntropy()({"x": logits})


# --- checkpoints of the VQGAN stage and clear errors --------------------------------------------


def test_vqgan_weights_load_from_safetensors_and_zoomsr_checkpoints(tmp_path):
    from safetensors.torch import save_file

    stage1 = tiny(stage="vqgan", seed=7)
    state = {k: v.contiguous() for k, v in stage1.vqgan.state_dict().items()}
    save_file(state, str(tmp_path / "vq.safetensors"))
    torch.save(
        {"state_dict": {f"backbone.vqgan.{k}": v for k, v in state.items()}}, tmp_path / "vq.ckpt"
    )
    for name in ("vq.safetensors", "vq.ckpt"):
        model = tiny(vqgan_ckpt=str(tmp_path / name), seed=None)
        for k, v in state.items():
            assert torch.equal(model.vqgan.state_dict()[k], v), (name, k)
    torch.save({"state_dict": {"backbone.unet.w": torch.zeros(1)}}, tmp_path / "sr3.ckpt")
    with pytest.raises(ZoomSRError, match="holds no VQGAN weights"):
        load_vqgan_state(tmp_path / "sr3.ckpt")
    with pytest.raises(ZoomSRError, match="does not fit this backbone config"):
        tiny(vqgan_ckpt=str(tmp_path / "vq.ckpt"), embed_dim=4)


def test_missing_vqgan_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(ZoomSRError, match=r"VQGAN weights not found: '.*nope\.ckpt'"):
        tiny(vqgan_ckpt=str(missing))
    with pytest.raises(ZoomSRError, match="VQGAN weights not found"):
        VQRefiner.check_weights(OmegaConf.create({"stage": "iter", "vqgan_ckpt": str(missing)}))
    VQRefiner.check_weights(OmegaConf.create({"stage": "vqgan", "vqgan_ckpt": str(missing)}))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"steps": 9}, r"steps \(T\) must be in \[1, 8\]"),
        ({"stage": "x"}, "stage must be"),
        ({"seed": None}, "set seed"),
        ({"schedule": "exp"}, "schedule must be"),
    ],
)
def test_bad_config_is_a_clear_error(kw, message):
    with pytest.raises(VQRefinerValueError, match=message):
        tiny(**kw)


def test_non_divisible_size_is_a_clear_error():
    model = tiny(scale=2)
    assert model.size_multiple == 2  # LR side 2 -> HR side 4 = the VQGAN's downsampling
    with pytest.raises(VQRefinerValueError, match="divisible by 4"):
        model.training_outputs(torch.rand(1, 3, 5, 6), torch.rand(1, 3, 10, 12))
    assert model.upscale(torch.rand(1, 3, 5, 6)).shape == (1, 3, 10, 12)  # padded, cropped back


def test_yaml_keys_are_the_init_arguments():
    cfg = OmegaConf.load(CONF)
    assert cfg._target_ == "zoomsr.backbones.vq_refiner.VQRefiner"
    params = inspect.signature(VQRefiner.__init__).parameters
    assert set(cfg) - {"_target_"} == set(params) - {"self"}
    for key, value in OmegaConf.to_container(cfg).items():
        if key not in ("_target_", "scale"):
            assert value == params[key].default or params[key].default is None, key
