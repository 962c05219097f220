"""Janspiry's SR3 checkpoints -> zoomsr (``zoomsr import-sr3``), checked against a reference
written here from Janspiry's equations (model/sr3_modules/unet.py, diffusion.py), on a
Janspiry-layout state dict with random values (key names and shapes as its code defines them).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from zoomsr.backbones.sr3 import SR3, pil_bicubic_8bit
from zoomsr.checkpoint import load_backbone
from zoomsr.interop.sr3 import SCHEDULE_BUFFERS, import_sr3, janspiry_schedule

# A small config in the released files' layout (sr_sr3_16_128.json), with a // comment.
UNET = {
    "in_channel": 6,
    "out_channel": 3,
    "inner_channel": 16,
    "norm_groups": 8,
    "channel_multiplier": [1, 2, 2],
    "attn_res": [8],
    "res_blocks": 2,
    "dropout": 0.2,
}
T = 50


def janspiry_json(unet: dict = UNET, image_size: int = 16, lr: int = 4, n_timestep: int = T) -> str:
    opt = {
        "name": "tiny",
        "datasets": {
            "train": {"l_resolution": lr, "r_resolution": image_size},
            "val": {"l_resolution": lr, "r_resolution": image_size},
        },
        "model": {
            "which_model_G": "sr3",
            "unet": unet,
            "beta_schedule": {
                k: {
                    "schedule": "linear",
                    "n_timestep": n_timestep,
                    "linear_start": 1e-6,
                    "linear_end": 1e-2,
                }
                for k in ("train", "val")
            },
            "diffusion": {"image_size": image_size, "channels": 3, "conditional": True},
        },
    }
    text = json.dumps(opt, indent=4)
    return text.replace('"name": "tiny",', '"name": "tiny", // a comment, as in the released files')


# -- Janspiry's layout: which tensors its GaussianDiffusion(UNet(...)).state_dict() holds --------


def janspiry_layout(u: dict, image_size: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape, following the construction in Janspiry's UNet.__init__ (restated)."""
    c, g = u["inner_channel"], u["norm_groups"]
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k, bias=True):
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            shapes[f"{name}.bias"] = (cout,)

    def norm(name, ch):
        shapes[f"{name}.weight"] = (ch,)
        shapes[f"{name}.bias"] = (ch,)

    def resblock(name, cin, cout, attn):
        shapes[f"{name}.res_block.noise_func.noise_func.0.weight"] = (cout, c)
        shapes[f"{name}.res_block.noise_func.noise_func.0.bias"] = (cout,)
        norm(f"{name}.res_block.block1.block.0", cin)
        conv(f"{name}.res_block.block1.block.3", cin, cout, 3)
        norm(f"{name}.res_block.block2.block.0", cout)
        conv(f"{name}.res_block.block2.block.3", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.res_block.res_conv", cin, cout, 1)
        if attn:
            norm(f"{name}.attn.norm", cout)
            conv(f"{name}.attn.qkv", cout, 3 * cout, 1, bias=False)
            conv(f"{name}.attn.out", cout, cout, 1)

    p = "denoise_fn."
    shapes[p + "noise_level_mlp.1.weight"] = (4 * c, c)
    shapes[p + "noise_level_mlp.1.bias"] = (4 * c,)
    shapes[p + "noise_level_mlp.3.weight"] = (c, 4 * c)
    shapes[p + "noise_level_mlp.3.bias"] = (c,)
    conv(p + "downs.0", u["in_channel"], c, 3)
    mults, res, pre, feats, i = u["channel_multiplier"], image_size, c, [c], 1
    for level, m in enumerate(mults):
        for _ in range(u["res_blocks"]):
            resblock(f"{p}downs.{i}", pre, c * m, res in u["attn_res"])
            pre, i = c * m, i + 1
            feats.append(pre)
        if level < len(mults) - 1:
            conv(f"{p}downs.{i}.conv", pre, pre, 3)
            feats.append(pre)
            i, res = i + 1, res // 2
    resblock(p + "mid.0", pre, pre, True)
    resblock(p + "mid.1", pre, pre, False)
    i = 0
    for level in reversed(range(len(mults))):
        for _ in range(u["res_blocks"] + 1):
            resblock(f"{p}ups.{i}", pre + feats.pop(), c * mults[level], res in u["attn_res"])
            pre, i = c * mults[level], i + 1
        if level > 0:
            conv(f"{p}ups.{i}.conv", pre, pre, 3)
            i, res = i + 1, res * 2
    norm(p + "final_conv.block.0", pre)
    conv(p + "final_conv.block.3", pre, u["out_channel"], 3)
    assert g and pre % g == 0
    return shapes


def janspiry_state(u: dict = UNET, image_size: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, s in janspiry_layout(u, image_size).items():
        is_norm_weight = "block.0.w" in k or "norm.w" in k
        state[k] = torch.randn(s, generator=g) * (0.3 if len(s) > 1 else 0.1) + is_norm_weight
    for name, value in janspiry_schedule(T, 1e-6, 1e-2).items():
        state[name] = value.float()
    return state


# -- Janspiry's equations, restated on the raw state dict ----------------------------------------


def ref_eps(sd: dict, u: dict, image_size: int, x: torch.Tensor, gamma: torch.Tensor):
    """``denoise_fn(x, gamma)`` of Janspiry's UNet, gamma ``(B, 1)``, from its equations."""
    p, c, groups = "denoise_fn.", u["inner_channel"], u["norm_groups"]

    def w(name):
        return sd[p + name + ".weight"], sd.get(p + name + ".bias")

    def swish(t):
        return t * torch.sigmoid(t)

    def block(name, h):  # GroupNorm -> Swish -> (Dropout) -> Conv3x3
        h = F.group_norm(h, groups, *w(name + ".block.0"), eps=1e-5)
        return F.conv2d(swish(h), *w(name + ".block.3"), padding=1)

    def resnet(name, h, emb):
        out = block(name + ".res_block.block1", h)
        out = out + F.linear(emb, *w(name + ".res_block.noise_func.noise_func.0")).view(
            h.shape[0], -1, 1, 1
        )
        out = block(name + ".res_block.block2", out)
        skip = h
        if p + name + ".res_block.res_conv.weight" in sd:
            skip = F.conv2d(h, *w(name + ".res_block.res_conv"))
        out = out + skip
        if p + name + ".attn.qkv.weight" in sd:
            b, ch, hh, ww = out.shape
            n = F.group_norm(out, groups, *w(name + ".attn.norm"), eps=1e-5)
            q, k, v = F.conv2d(n, sd[p + name + ".attn.qkv.weight"]).chunk(3, dim=1)
            att = torch.einsum("bchw,bcyx->bhwyx", q, k) / math.sqrt(ch)
            att = att.reshape(b, hh, ww, -1).softmax(-1).reshape(b, hh, ww, hh, ww)
            o = torch.einsum("bhwyx,bcyx->bchw", att, v)
            out = F.conv2d(o, *w(name + ".attn.out")) + out
        return out

    count = c // 2
    step = torch.arange(count, dtype=torch.float32) / count
    enc = gamma.unsqueeze(1) * torch.exp(-math.log(1e4) * step.unsqueeze(0))  # (B, 1, count)
    enc = torch.cat([enc.sin(), enc.cos()], dim=-1)
    emb = F.linear(swish(F.linear(enc, *w("noise_level_mlp.1"))), *w("noise_level_mlp.3"))
    h = F.conv2d(x, *w("downs.0"), padding=1)
    feats, i, mults = [h], 1, u["channel_multiplier"]
    for level in range(len(mults)):
        for _ in range(u["res_blocks"]):
            h = resnet(f"downs.{i}", h, emb)
            feats.append(h)
            i += 1
        if level < len(mults) - 1:
            h = F.conv2d(h, *w(f"downs.{i}.conv"), stride=2, padding=1)
            feats.append(h)
            i += 1
    h = resnet("mid.1", resnet("mid.0", h, emb), emb)
    i = 0
    for level in reversed(range(len(mults))):
        for _ in range(u["res_blocks"] + 1):
            h = resnet(f"ups.{i}", torch.cat([h, feats.pop()], dim=1), emb)
            i += 1
        if level > 0:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = F.conv2d(h, *w(f"ups.{i}.conv"), padding=1)
            i += 1
    return block("final_conv", h)


@pytest.fixture
def imported(tmp_path):
    sd = janspiry_state()
    ckpt, config = tmp_path / "I640000_E37_gen.pth", tmp_path / "sr_tiny.json"
    torch.save(sd, ckpt)
    config.write_text(janspiry_json())
    return sd, import_sr3(ckpt, config, tmp_path / "out")


def test_import_consumes_every_key_and_gives_janspiry_noise_prediction(imported):
    sd, path = imported
    backbone = load_backbone(path)
    assert isinstance(backbone, SR3) and backbone.scale == 4
    assert backbone.variant == "janspiry" and backbone.condition == "pil_bicubic_8bit"
    # every U-Net key of the file is in the model (the schedule buffers were checked)
    n_net = sum(1 for k in sd if k.startswith("denoise_fn."))
    assert len(backbone.unet.state_dict()) == n_net == len(sd) - len(SCHEDULE_BUFFERS)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 16, 16, generator=g)
    gamma = torch.rand(2, 1, generator=g)
    with torch.no_grad():
        ours = backbone.predict_noise(x, gamma)
        ref = ref_eps(sd, UNET, 16, x, gamma)
    assert ref.abs().mean() > 0.05  # a real signal, not zeros
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0), (ours - ref).abs().max()


def test_janspiry_sampling_step_matches_its_posterior(imported):
    """One DDPM step of the imported backbone equals Janspiry's p_sample at index t."""
    sd, path = imported
    backbone = load_backbone(path)
    g = torch.Generator().manual_seed(2)
    cond, x = torch.randn(1, 3, 16, 16, generator=g), torch.randn(1, 3, 16, 16, generator=g)
    noise = torch.randn(1, 3, 16, 16, generator=g)
    i = T - 7  # Janspiry's 0-based step index; zoomsr's levels are 1-based
    level = torch.tensor([[math.sqrt(sd["alphas_cumprod"][i].double().item())]])
    with torch.no_grad():
        eps = ref_eps(sd, UNET, 16, torch.cat([cond, x], 1), level.float())
        x0 = sd["sqrt_recip_alphas_cumprod"][i] * x - sd["sqrt_recipm1_alphas_cumprod"][i] * eps
        mean = sd["posterior_mean_coef1"][i] * x0.clamp(-1, 1) + sd["posterior_mean_coef2"][i] * x
        ref = mean + noise * (0.5 * sd["posterior_log_variance_clipped"][i]).exp()
        eps_ours = backbone.unet(torch.cat([cond, x], 1), level.float()[:, 0])
        ours = backbone.diffusion.ddpm_step(x, eps_ours, i + 1, i, noise)
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()


def test_pil_condition_is_pil_bicubic_of_the_8bit_lr():
    import numpy as np
    from PIL import Image

    lr = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(3))
    u8 = (lr[0].permute(1, 2, 0) * 255).round().byte().numpy()
    want = np.asarray(Image.fromarray(u8, "RGB").resize((28, 20), Image.BICUBIC))
    got = pil_bicubic_8bit(lr, (20, 28))[0].permute(1, 2, 0) * 255
    assert torch.equal(got.round().byte(), torch.from_numpy(want.copy()))


def test_import_names_the_key_it_cannot_place(tmp_path):
    sd = janspiry_state()
    sd["denoise_fn.extra.weight"] = torch.zeros(3)
    del sd["denoise_fn.mid.1.res_block.block2.block.3.bias"]
    torch.save(sd, tmp_path / "a_gen.pth")
    (tmp_path / "c.json").write_text(janspiry_json())
    from zoomsr.errors import ZoomSRError

    with pytest.raises(
        ZoomSRError, match=r"lacks 'denoise_fn\.mid\.1\.res_block\.block2\.block\.3\.bias'"
    ):
        import_sr3(tmp_path / "a_gen.pth", tmp_path / "c.json", tmp_path / "o")
    sd["denoise_fn.mid.1.res_block.block2.block.3.bias"] = torch.zeros(32)
    torch.save(sd, tmp_path / "a_gen.pth")
    with pytest.raises(
        ZoomSRError, match=r"fit no place in the network: denoise_fn\.extra\.weight"
    ):
        import_sr3(tmp_path / "a_gen.pth", tmp_path / "c.json", tmp_path / "o")


def test_cli_import_then_evaluate_and_infer(tmp_path, capsys, compose_cfg):
    from zoomsr.cli import main
    from zoomsr.data.io import save_image
    from zoomsr.tasks import evaluate, infer

    torch.save(janspiry_state(), tmp_path / "x_gen.pth")
    (tmp_path / "c.json").write_text(janspiry_json())
    out = tmp_path / "out"
    args = [
        "import-sr3",
        "--ckpt",
        str(tmp_path / "x_gen.pth"),
        "--config",
        str(tmp_path / "c.json"),
    ]
    assert main([*args, "--out", str(out), "--sample-steps", "3"]) == 0
    assert (out / "sr3.ckpt").is_file()
    backbone = load_backbone(out / "sr3.ckpt")
    sr = backbone.upscale(torch.rand(1, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    assert sr.shape == (1, 3, 16, 16) and sr.min() >= 0 and sr.max() <= 1
    hr = tmp_path / "hr"
    hr.mkdir()
    save_image(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4)), hr / "f.png")
    ckpt = f"ckpt={out / 'sr3.ckpt'}"
    result = evaluate.run(
        compose_cfg("evaluate", [ckpt, f"data.hr_dir={hr}", "scales=[4]", "logger=csv",
                                 f"out_dir={tmp_path / 'ev'}", "device=cpu"])
    )  # fmt: skip
    assert result["x4"]["n_images"] == 1 and result["x4"]["psnr_y"] > 0
    lr = tmp_path / "lr"
    lr.mkdir()
    save_image(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(5)), lr / "g.png")
    infer.run(
        compose_cfg("infer", [ckpt, "zoom=full", f"input={lr}", f"out_dir={tmp_path / 'inf'}",
                              "device=cpu"])
    )  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "inf").rglob("*.png")) == ["g_x4.png"]
    with pytest.raises(SystemExit) as exc:
        main([args[0], "--ckpt", str(tmp_path / "missing_gen.pth"), *args[3:], "--out", str(out)])
    assert exc.value.code == 2
    assert "SR3 checkpoint not found: " in capsys.readouterr().err


# The networks of Janspiry's released configs (config/sr_sr3_16_128.json, sr_sr3_64_512.json):
# unet + beta_schedule + diffusion.image_size, and define_G's norm_groups default of 32.
RELEASED = {
    "sr3_16_128": {
        "inner_channel": 64, "channel_mults": [1, 2, 4, 8, 8], "attn_res": [16], "res_blocks": 2,
        "dropout": 0.2, "norm_groups": 32, "image_size": 128,
    },
    "sr3_64_512": {
        "inner_channel": 64, "channel_mults": [1, 2, 4, 8, 16], "attn_res": [], "res_blocks": 1,
        "dropout": 0.0, "norm_groups": 16, "image_size": 512,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_experiments_are_the_released_configs(compose_cfg, name, tmp_path):
    cfg = compose_cfg("train", [f"experiment={name}"])
    b = cfg.backbone
    for key, value in RELEASED[name].items():
        assert b[key] == value, key
    assert (b.n_timestep, b.linear_start, b.linear_end) == (2000, 1e-6, 1e-2)
    assert (b.variant, b.condition, cfg.scale) == ("janspiry", "pil_bicubic_8bit", 8)
    # and the importer reads the same network out of a JSON with those values
    unet = {"in_channel": 6, "out_channel": 3, "inner_channel": 64, "norm_groups": b.norm_groups,
            "channel_multiplier": list(b.channel_mults), "attn_res": list(b.attn_res),
            "res_blocks": b.res_blocks, "dropout": b.dropout}  # fmt: skip
    from zoomsr.interop.sr3 import backbone_config, read_janspiry_config

    path = tmp_path / "released.json"
    path.write_text(janspiry_json(unet, b.image_size, b.image_size // 8, 2000))
    imported = backbone_config(read_janspiry_config(path))
    for key, value in RELEASED[name].items():
        assert imported[key] == value, key
