"""SD3 LoRA backbone on the tiny random SD3 (real diffusers/transformers/peft classes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoomsr.backbones.sd3_lora import SD3LoRA
from zoomsr.backbones.sd3_tiny import ensure_tiny_sd3
from zoomsr.errors import ZoomSRError
from zoomsr.losses.pixel import PixelLoss
from zoomsr.losses.vsd import RegularizerLoss, VSDLoss

TINY = {"pretrained": "tiny", "max_sequence_length": 16}


def randomize(backbone: SD3LoRA, seed: int = 0, std: float = 0.2) -> None:
    """Non-zero adapters (a fresh LoRA has B = 0 and would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 32, 32, generator=g)


def step_grads(backbone: SD3LoRA, lr, hr, terms) -> dict[str, torch.Tensor]:
    backbone.zero_grad(set_to_none=True)
    out = backbone.training_outputs(lr, hr, ["a red cat", None], seeds=torch.tensor([3, 4]))
    torch.stack([t(out) for t in terms]).sum().backward()
    return {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}


def test_only_adapters_get_gradients_each_from_its_own_loss(images):
    b = SD3LoRA(**TINY, vsd=True, gradient_checkpointing=True)
    randomize(b)
    lr, hr = images
    gen_terms = [PixelLoss("l2", "sr", "hr"), VSDLoss()]
    grads = step_grads(b, lr, hr, [*gen_terms, RegularizerLoss()])
    lora = {n for n, p in b.named_parameters() if ".lora_" in n}
    assert set(grads) == lora  # every adapter weight, and nothing frozen, gets a gradient
    assert all(g.abs().sum() > 0 for g in grads.values())
    assert {n for n, p in b.named_parameters() if p.requires_grad} == lora
    # The generator's terms reach the generator and VAE-encoder adapters only; the
    # regularizer's loss reaches the regularizer only (so one backward pass serves both).
    gen_only = step_grads(b, lr, hr, gen_terms)
    assert not any(".regularizer." in n for n in gen_only) and gen_only
    reg_only = step_grads(b, lr, hr, [RegularizerLoss()])
    assert set(reg_only) == {n for n in lora if ".regularizer." in n}


def test_gradient_checkpointing_recomputes_with_the_right_adapter(images):
    """Checkpointed blocks are recomputed after the step switched adapters; the gradients must
    equal those without checkpointing."""
    lr, hr = images
    terms = [PixelLoss("l2", "sr", "hr"), VSDLoss(), RegularizerLoss()]
    runs = []
    for ckpt in (False, True):
        b = SD3LoRA(**TINY, vsd=True, gradient_checkpointing=ckpt)
        randomize(b)
        runs.append(step_grads(b, lr, hr, terms))
    assert runs[0].keys() == runs[1].keys()
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[1][k], rtol=1e-4, atol=1e-6, msg=k)


def test_zero_init_lora_is_the_base_models_one_step():
    """Fresh adapters (B = 0): upscale equals SD3's one step computed by hand from the same
    folder without peft: bicubic -> (E(x) - shift) * scaling -> z - v(t=1000) -> decode."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    b = SD3LoRA(**TINY, latent="mean")
    folder = ensure_tiny_sd3()
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    net = SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer")
    lr = torch.rand(1, 3, 8, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        x = F.interpolate(lr, size=(32, 48), mode="bicubic", align_corners=False).clamp(0, 1)
        shift, scaling = vae.config.shift_factor, vae.config.scaling_factor
        z = (vae.encode(x * 2 - 1).latent_dist.mean - shift) * scaling
        emb, pooled = b.prompt_embeddings(["a photo"], 1)
        v = net(z, encoder_hidden_states=emb, pooled_projections=pooled,
                timestep=torch.tensor([1000.0])).sample  # fmt: skip
        expected = ((vae.decode((z - v) / scaling + shift).sample + 1) / 2).clamp(0, 1)
    assert shift != 0 and scaling != 1
    torch.testing.assert_close(b.upscale(lr, ["a photo"]), expected, atol=1e-5, rtol=1e-5)
    randomize(b)
    assert (b.upscale(lr, ["a photo"]) - expected).abs().max() > 1e-3  # adapters do act


def test_trainable_state_round_trip_gives_identical_outputs(images):
    a = SD3LoRA(**TINY, vsd=True)
    randomize(a, seed=5)
    state = a.trainable_state_dict()
    assert state and all(".lora_" in k for k in state)
    b = SD3LoRA(**TINY, vsd=True)
    b.load_trainable_state_dict(state)
    lr = images[0]
    assert torch.equal(a.upscale(lr, ["x", "y"]), b.upscale(lr, ["x", "y"]))
    assert torch.equal(a.upscale(lr), a.upscale(lr))  # seeded latent sample: deterministic


def test_prompts_are_encoded_once_and_t5_is_optional():
    b = SD3LoRA(**TINY, vae_lora=False)
    emb, pooled = b.prompt_embeddings(["a cat", "a dog", "a cat"], 3)
    assert sorted(b._prompt_cache) == ["a cat", "a dog"]
    assert torch.equal(emb[0], emb[2]) and not torch.equal(emb[0], emb[1])
    no_t5 = SD3LoRA(**TINY, vae_lora=False, use_t5=False)
    emb2, pooled2 = no_t5.prompt_embeddings(["a cat"], 1)
    torch.testing.assert_close(pooled2[0], pooled[0])  # CLIP part unchanged
    assert emb2[0, 77:].abs().sum() == 0  # T5 tokens are zeros, as in diffusers


def test_exported_lora_loads_in_diffusers_and_reproduces_the_generator(tmp_path):
    from diffusers import StableDiffusion3Pipeline

    b = SD3LoRA(**TINY, latent="mean")
    randomize(b, seed=7)
    b.export_lora(tmp_path)
    pipe = StableDiffusion3Pipeline.from_pretrained(ensure_tiny_sd3())
    pipe.load_lora_weights(tmp_path)
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    emb, pooled = b.prompt_embeddings(["a cat"], 1)
    t = torch.tensor([1000.0])
    with torch.no_grad():
        ours = b.velocity(z, t, emb, pooled)
        theirs = pipe.transformer(z, encoder_hidden_states=emb, pooled_projections=pooled,
                                  timestep=t).sample  # fmt: skip
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_missing_weights_name_the_folder_and_the_fix(tmp_path):
    missing = tmp_path / "sd3-medium"
    with pytest.raises(ZoomSRError, match="sd3-medium' does not exist.*backbone.pretrained="):
        SD3LoRA(pretrained=str(missing))
    with pytest.raises(ZoomSRError, match="models--org--no-such-sd3"):
        SD3LoRA(pretrained="org/no-such-sd3")
    (missing / "transformer").mkdir(parents=True)
    with pytest.raises(ZoomSRError, match="lacks vae/"):
        SD3LoRA(pretrained=str(missing))


def test_on_demand_text_encoders_give_the_same_embeddings_and_are_freed_after():
    kept = SD3LoRA(**TINY, vae_lora=False)
    lazy = SD3LoRA(**TINY, vae_lora=False, text_encoders="on_demand")
    # Nothing of the text encoders stays resident: not a submodule, not in the pipeline.
    assert lazy.text_encoder is None and lazy.text_encoder_2 is None
    assert not any("text_encoder" in n for n, _ in lazy.named_parameters())
    assert any("text_encoder" in n for n, _ in kept.named_parameters())
    loads = []
    real = lazy._text_encoder_parts
    lazy._text_encoder_parts = lambda: loads.append(1) or real()
    emb, pooled = lazy.prompt_embeddings(["a cat", None], 2)
    want_emb, want_pooled = kept.prompt_embeddings(["a cat", None], 2)
    torch.testing.assert_close(emb, want_emb, rtol=0, atol=0)
    torch.testing.assert_close(pooled, want_pooled, rtol=0, atol=0)
    assert lazy._pipe.text_encoder is None and lazy._pipe.text_encoder_2 is None
    lazy.prompt_embeddings(["a cat", ""], 2)  # both cached: no load
    assert len(loads) == 1
    lazy.prompt_embeddings(["a dog"], 1)
    assert len(loads) == 2


def test_on_demand_warns_once_when_prompts_keep_changing():
    b = SD3LoRA(**TINY, vae_lora=False, text_encoders="on_demand")
    with pytest.warns(UserWarning, match="set backbone.text_encoders=keep") as caught:
        for i in range(6):
            b.prompt_embeddings([f"prompt {i}"], 1)
    assert sum("text_encoders=on_demand" in str(w.message) for w in caught) == 1


def test_a_training_step_encodes_its_prompts_and_the_negative_prompt_in_one_load(images):
    lr, hr = images
    b = SD3LoRA(**TINY, vsd=True, text_encoders="on_demand")
    loads = []
    real = b._text_encoder_parts
    b._text_encoder_parts = lambda: loads.append(1) or real()
    vsd = VSDLoss(negative_prompt="blurry")
    for _ in range(2):
        out = b.training_outputs(lr, hr, ["a red cat", None], seeds=torch.tensor([3, 4]),
                                 vsd=vsd.settings)  # fmt: skip
    assert len(loads) == 1
    assert sorted(b._prompt_cache) == ["", "a red cat", "blurry"]
    assert torch.isfinite(out["x0_real"]).all()


def test_the_prompt_cache_keeps_the_most_recently_used(monkeypatch):
    import zoomsr.backbones.sd3_lora as sd3

    monkeypatch.setattr(sd3, "PROMPT_CACHE_SIZE", 3)
    b = SD3LoRA(**TINY, vae_lora=False)
    first = b.prompt_embeddings(["p0"], 1)[0]
    for p in ["p1", "p2", "p0", "p3", "p4"]:  # p0 used again: p1 and p2 are the oldest
        b.prompt_embeddings([p], 1)
    assert list(b._prompt_cache) == ["p0", "p3", "p4"]
    torch.testing.assert_close(b.prompt_embeddings(["p0"], 1)[0], first, rtol=0, atol=0)
    # A batch with more distinct prompts than the cache holds still gets all of them.
    emb, _ = b.prompt_embeddings(["a", "b", "c", "d", "e"], 5)
    assert emb.shape[0] == 5 and len(b._prompt_cache) == 5


def saved_bytes(fn) -> int:
    """Bytes autograd keeps for the backward pass while ``fn`` runs (outside checkpoints)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def test_gradient_checkpointing_covers_the_vae_and_keeps_its_gradients(images):
    lr, hr = images
    runs, kept = [], []
    for ckpt in (False, True):
        b = SD3LoRA(**TINY, gradient_checkpointing=ckpt)
        randomize(b)
        assert b.vae.encoder.gradient_checkpointing is ckpt
        assert b.vae.decoder.gradient_checkpointing is ckpt
        x = (lr * 2 - 1).requires_grad_(True)
        up = F.interpolate(x, scale_factor=4, mode="bicubic")
        kept.append(saved_bytes(lambda b=b, up=up: b.decode(b.encode(up))))
        runs.append(step_grads(b, lr, hr, [PixelLoss("l2", "sr", "hr")]))
    assert kept[1] < kept[0] / 3  # only the checkpointed blocks' inputs are kept
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[1][k], rtol=1e-4, atol=1e-6, msg=k)


def test_bad_text_encoders_setting_is_one_line():
    with pytest.raises(ZoomSRError, match="backbone.text_encoders must be 'keep' or 'on_demand'"):
        SD3LoRA(**TINY, text_encoders="lazy")


def test_adapters_train_in_float32_over_bfloat16_weights(images):
    lr, hr = images
    b = SD3LoRA(**TINY, vsd=True, weight_dtype="bfloat16", vae_dtype="bfloat16")
    assert b.transformer.dtype == torch.bfloat16 and b.vae.dtype == torch.bfloat16
    lora = {n: p for n, p in b.named_parameters() if ".lora_" in n}
    assert {p.dtype for p in lora.values()} == {torch.float32}
    assert {n.split(".")[0] for n in lora} == {"transformer", "vae"}
    randomize(b)
    before = {n: p.detach().clone() for n, p in lora.items()}
    opt = torch.optim.AdamW(lora.values(), lr=1e-6)  # updates far below bf16's resolution
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = b.training_outputs(lr, hr, ["a red cat", None], seeds=torch.tensor([3, 4]))
        loss = sum(t(out) for t in [PixelLoss("l2", "sr", "hr"), VSDLoss(), RegularizerLoss()])
    loss.backward()
    opt.step()
    assert all(not torch.equal(before[n], p) for n, p in lora.items() if p.grad is not None)
    # Without autocast the bf16 VAE takes and gives float32 images.
    with torch.no_grad():
        sr = b.upscale(lr, ["a red cat", None])
    assert sr.dtype == torch.float32 and sr.shape == (2, 3, 32, 32) and torch.isfinite(sr).all()
