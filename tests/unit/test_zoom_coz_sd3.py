"""The default chain on a tiny random SD3 (the real diffusers classes) against a re-statement of
CoZ's ``inference_coz.py`` + ``OSEDiff_SD3_TEST.forward``: the same pixels at every step with
CoZ's flags (``backbone.encode_shift=false``, global-RNG latent sample); the positional range of
the tiny model is SD3-medium's; a size beyond it is one line, not a diffusers traceback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zoomsr.backbones.sd3_lora import SD3LoRA
from zoomsr.data.io import quantize, to_uint8
from zoomsr.errors import ZoomSRError
from zoomsr.zoom.chain import ChainEngine


@pytest.fixture(scope="module")
def sd3():
    torch.manual_seed(0)
    model = SD3LoRA("tiny", max_sequence_length=512, encode_shift=False, seed=None)
    with torch.no_grad():  # non-zero LoRA B matrices: the adapters act
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model.eval()


def _tensor(pil):
    return torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1).float().div(255)


@torch.no_grad()
def coz_encode_prompt(sd3, prompt):
    """CoZ's ``StableDiffusion3Base.encode_prompt``: two CLIPs (77 tokens, penultimate hidden
    states, pooled outputs) and T5 (512 tokens), CLIP padded to T5's width, joined."""
    pipe = sd3._pipe
    embs, pools = [], []
    for tok, enc in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tok([prompt], padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt").input_ids  # fmt: skip
        out = enc(ids, output_hidden_states=True)
        pools.append(out[0])
        embs.append(out.hidden_states[-2])
    ids = pipe.tokenizer_3([prompt], padding="max_length", max_length=512, truncation=True,
                           add_special_tokens=True, return_tensors="pt").input_ids  # fmt: skip
    t5 = pipe.text_encoder_3(ids)[0]
    clip = torch.cat(embs, dim=-1)
    clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    return torch.cat([clip, t5], dim=-2), torch.cat(pools, dim=-1)


@torch.no_grad()
def coz_forward(sd3, x_src, prompt):
    """``OSEDiff_SD3_TEST.forward``: encode (no shift), v at t = 1000, z - v, decode."""
    vae = sd3.vae
    z = vae.encode(x_src).latent_dist.sample() * vae.config.scaling_factor
    emb, pooled = coz_encode_prompt(sd3, prompt)
    sd3._pipe.scheduler.set_timesteps(1)
    t = sd3._pipe.scheduler.timesteps[0].expand(z.shape[0])
    v = sd3.transformer(hidden_states=z, timestep=t, pooled_projections=pooled,
                        encoder_hidden_states=emb, return_dict=False)[0]  # fmt: skip
    z = z - v
    return vae.decode(z / vae.config.scaling_factor + vae.config.shift_factor).sample


def test_recursive_chain_equals_coz_with_a_tiny_sd3(sd3):
    g = torch.Generator().manual_seed(1)
    image = quantize(torch.rand(3, 64, 64, generator=g))
    torch.manual_seed(5)
    engine = ChainEngine("recursive", steps=2, process_size=64, backbone=sd3, seed=None)
    steps = engine.run(image, "im", prompts=["a wall", ""]).steps
    torch.manual_seed(5)
    prev = Image.fromarray(to_uint8(image).permute(1, 2, 0).numpy())
    for k, prompt in ((1, "a wall"), (2, "")):
        crop = prev.crop((24, 24, 40, 40)).resize((64, 64), Image.BICUBIC)
        out = coz_forward(sd3, _tensor(crop)[None] * 2 - 1, prompt)
        out = (torch.clamp(out[0], -1.0, 1.0) * 0.5 + 0.5).mul(255).byte()
        prev = Image.fromarray(out.permute(1, 2, 0).numpy())
        torch.testing.assert_close(steps[k].input, _tensor(crop), rtol=0, atol=0)
        torch.testing.assert_close(steps[k].output, _tensor(prev), rtol=0, atol=0)  # bit for bit


def test_tiny_sd3_has_sd3_mediums_positional_range_and_sizes_fail_in_one_line(sd3):
    assert sd3.transformer.config.pos_embed_max_size == 192
    assert sd3.max_input_size == 192 * 4 // 4  # 192 patches x 2 px x f=2, per x4 step
    with pytest.raises(ZoomSRError, match="at most 192 px a side"):
        sd3.upscale(torch.rand(1, 3, 200, 8))
    engine = ChainEngine("recursive", steps=1, process_size=64, backbone=sd3, tile_size=256)
    with pytest.raises(ZoomSRError, match="zoom.tile_size=256 is larger than the 192 px"):
        engine.run(torch.rand(3, 64, 64), "im")
