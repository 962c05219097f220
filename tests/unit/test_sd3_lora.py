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
