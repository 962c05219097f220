"""VAR's VQVAE (``zoomsr import-var``, :mod:`zoomsr.backbones.var_vqvae`), checked on a VAR-layout
state dict with random values (key names and shapes as VAR's models/vqvae.py, basic_vae.py and
quant.py define them, small widths, VAR's ten scales) against a reference written here from
VAR's equations on the raw tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoomsr.backbones.var_vqvae import VAR_PATCH_NUMS, VARVQVAE, phi_index
from zoomsr.errors import ZoomSRError
from zoomsr.interop.var import import_var, load_var_vqvae

CH, MULT, BLOCKS, V, CVAE = 32, (1, 1, 2), 1, 64, 8  # x4: 64 px images -> 16 x 16 latents
K_PHI = 4


def var_layout(ch=CH, mult=MULT, blocks=BLOCKS, vocab=V, cvae=CVAE, scales=10):
    """Key -> shape of VAR's ``VQVAE(...).state_dict()`` (its construction, restated)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def res(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        conv(f"{name}.qkv", c, 3 * c, 1)
        conv(f"{name}.proj_out", c, c, 1)

    def mid(name, c):
        res(f"{name}.block_1", c, c)
        attn(f"{name}.attn_1", c)
        res(f"{name}.block_2", c, c)

    last = len(mult) - 1
    conv("encoder.conv_in", 3, ch, 3)
    cin = ch
    for i, m in enumerate(mult):
        for j in range(blocks):
            res(f"encoder.down.{i}.block.{j}", cin, ch * m)
            cin = ch * m
            if i == last:
                attn(f"encoder.down.{i}.attn.{j}", cin)
        if i != last:
            conv(f"encoder.down.{i}.downsample.conv", cin, cin, 3)
    mid("encoder.mid", cin)
    norm("encoder.norm_out", cin)
    conv("encoder.conv_out", cin, cvae, 3)
    conv("decoder.conv_in", cvae, cin, 3)
    mid("decoder.mid", cin)
    for i in reversed(range(len(mult))):
        for j in range(blocks + 1):
            res(f"decoder.up.{i}.block.{j}", cin, ch * mult[i])
            cin = ch * mult[i]
            if i == last:
                attn(f"decoder.up.{i}.attn.{j}", cin)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", cin, cin, 3)
    norm("decoder.norm_out", cin)
    conv("decoder.conv_out", cin, 3, 3)
    conv("quant_conv", cvae, cvae, 3)
    conv("post_quant_conv", cvae, cvae, 3)
    shapes["quantize.embedding.weight"] = (vocab, cvae)
    for k in range(K_PHI):
        conv(f"quantize.quant_resi.qresi_ls.{k}", cvae, cvae, 3)
    shapes["quantize.ema_vocab_hit_SV"] = (scales, vocab)
    return shapes


def var_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in var_layout().items():
        if key.endswith("ema_vocab_hit_SV"):
            state[key] = torch.rand(shape, generator=g) * 10
        elif "norm" in key and key.endswith(".weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif key == "quantize.embedding.weight":
            state[key] = torch.randn(shape, generator=g) * 0.5
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            state[key] = torch.randn(shape, generator=g) / fan_in**0.5 * (len(shape) > 1 or 0.1)
    return state


# -- VAR's equations on the raw tensors -----------------------------------------------------------


class Ref:
    """VAR's VQVAE as equations: ``sd`` its state dict."""

    def __init__(self, sd, mult=MULT, blocks=BLOCKS, patch_nums=VAR_PATCH_NUMS):
        self.sd, self.mult, self.blocks, self.pn = sd, mult, blocks, patch_nums

    def conv(self, name, x, stride=1, pad=None):
        w = self.sd[f"{name}.weight"]
        return F.conv2d(
            x, w, self.sd[f"{name}.bias"], stride, w.shape[-1] // 2 if pad is None else pad
        )

    def gn(self, name, x):  # GroupNorm(32, eps=1e-6)
        return F.group_norm(x, 32, self.sd[f"{name}.weight"], self.sd[f"{name}.bias"], eps=1e-6)

    def res(self, name, x):
        h = self.conv(f"{name}.conv1", F.silu(self.gn(f"{name}.norm1", x)))
        h = self.conv(f"{name}.conv2", F.silu(self.gn(f"{name}.norm2", h)))
        skip = (
            self.conv(f"{name}.nin_shortcut", x) if f"{name}.nin_shortcut.weight" in self.sd else x
        )
        return skip + h

    def attn(self, name, x):  # softmax(q^T k / sqrt(C)) applied to v, residual
        b, c, hh, ww = x.shape
        q, k, v = (
            self.conv(f"{name}.qkv", self.gn(f"{name}.norm", x)).reshape(b, 3, c, hh * ww).unbind(1)
        )
        a = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * c**-0.5, dim=2)
        return x + self.conv(
            f"{name}.proj_out", torch.einsum("bij,bcj->bci", a, v).reshape(b, c, hh, ww)
        )

    def mid(self, name, h):
        return self.res(
            f"{name}.block_2", self.attn(f"{name}.attn_1", self.res(f"{name}.block_1", h))
        )

    def encode(self, x):
        last = len(self.mult) - 1
        h = self.conv("encoder.conv_in", x)
        for i in range(len(self.mult)):
            for j in range(self.blocks):
                h = self.res(f"encoder.down.{i}.block.{j}", h)
                if i == last:
                    h = self.attn(f"encoder.down.{i}.attn.{j}", h)
            if i != last:  # pad right/bottom, stride-2 conv
                h = self.conv(f"encoder.down.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), 2, 0)
        h = self.mid("encoder.mid", h)
        h = self.conv("encoder.conv_out", F.silu(self.gn("encoder.norm_out", h)))
        return self.conv("quant_conv", h)

    def decode(self, f_hat):
        last = len(self.mult) - 1
        h = self.mid(
            "decoder.mid", self.conv("decoder.conv_in", self.conv("post_quant_conv", f_hat))
        )
        for i in reversed(range(len(self.mult))):
            for j in range(self.blocks + 1):
                h = self.res(f"decoder.up.{i}.block.{j}", h)
                if i == last:
                    h = self.attn(f"decoder.up.{i}.attn.{j}", h)
            if i != 0:
                h = self.conv(
                    f"decoder.up.{i}.upsample.conv",
                    F.interpolate(h, scale_factor=2, mode="nearest"),
                )
        return self.conv("decoder.conv_out", F.silu(self.gn("decoder.norm_out", h))).clamp(-1, 1)

    def phi(self, k, h):  # 0.5 h + 0.5 conv(h), phi chosen by VAR's ticks
        ticks = np.linspace(1 / 12, 11 / 12, 4)
        i = int(np.argmin(np.abs(ticks - k / (len(self.pn) - 1))))
        return 0.5 * h + 0.5 * self.conv(f"quantize.quant_resi.qresi_ls.{i}", h)

    def tokens(self, f):
        """VAR Alg. 1: per scale the nearest code of the area-pooled residual."""
        b, c, hh, ww = f.shape
        codes = self.sd["quantize.embedding.weight"]
        rest, f_hat, out = f.clone(), torch.zeros_like(f), []
        for k, p in enumerate(self.pn):
            z = F.interpolate(rest, size=(p, p), mode="area") if p != hh else rest
            zf = z.permute(0, 2, 3, 1).reshape(-1, c)
            dist = (zf**2).sum(1, keepdim=True) + (codes**2).sum(1) - 2 * zf @ codes.T
            idx = dist.argmin(1).reshape(b, p, p)
            h = self.up(k, codes[idx].permute(0, 3, 1, 2), hh)
            f_hat, rest = f_hat + h, rest - h
            out.append(idx)
        return out

    def up(self, k, e, size):
        h = F.interpolate(e, size=(size, size), mode="bicubic") if e.shape[-1] != size else e
        return self.phi(k, h)

    def f_hat(self, tokens, size):
        codes = self.sd["quantize.embedding.weight"]
        return sum(self.up(k, codes[t].permute(0, 3, 1, 2), size) for k, t in enumerate(tokens))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("var")
    sd = var_state()
    torch.save(sd, folder / "vae_tiny.pth")
    from zoomsr.cli import main

    assert (
        main(["import-var", "--vae", str(folder / "vae_tiny.pth"), "--out", str(folder / "out")])
        == 0
    )
    return sd, folder / "out"


def test_import_consumes_every_key(imported):
    sd, out = imported
    vae = load_var_vqvae(out)
    assert set(vae.state_dict()) == set(sd)  # all 1:1, none dropped, none added
    for key, value in sd.items():
        assert torch.equal(vae.state_dict()[key], value), key
    config = json.loads((out / "var_vqvae.json").read_text())
    assert (config["ch"], config["ch_mult"], config["vocab_size"], config["z_channels"]) == (
        32,
        [1, 1, 2],
        64,
        8,
    )
    assert config["share_quant_resi"] == 4 and config["patch_nums"] == list(VAR_PATCH_NUMS)


def test_tokens_identical_and_reconstruction_equal_to_var_equations(imported):
    sd, out = imported
    vae, ref = load_var_vqvae(out), Ref(sd)
    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        tokens = vae.token_maps(img)
        flat = vae.encode_tokens(img)
        f = ref.encode(img)
        assert torch.allclose(vae.latent(img), f, atol=1e-5)
        want = ref.tokens(vae.latent(img))  # the same latent: tokens must not drift
        recon, want_recon = vae.decode_tokens(tokens), ref.decode(ref.f_hat(want, 16))
    assert [tuple(t.shape) for t in tokens] == [(2, p, p) for p in VAR_PATCH_NUMS]
    assert all(t.dtype == torch.int64 for t in tokens)
    for k, (a, b) in enumerate(zip(tokens, want)):
        assert torch.equal(a, b), f"scale {k}"
    assert len(torch.unique(tokens[-1])) > 8  # many codes in use: a real test of the search
    assert recon.shape == img.shape and recon.std() > 0.05
    assert torch.allclose(recon, want_recon, atol=1e-4), (recon - want_recon).abs().max()
    # encode_tokens: VAR's flat (B, p*p) lists, which decode the same
    assert [tuple(t.shape) for t in flat] == [(2, p * p) for p in VAR_PATCH_NUMS]
    assert all(torch.equal(a, b.flatten(1)) for a, b in zip(flat, tokens))
    assert torch.equal(vae.decode_tokens(flat), recon)
    assert torch.equal(vae.reconstruct(img), recon)


def test_phi_sharing_follows_vars_tick_rule():
    assert [phi_index(k, 10, 4) for k in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    vae = VARVQVAE(vocab_size=8, z_channels=4, ch=32, ch_mult=(1,), num_res_blocks=1)
    phis = vae.quantize._phis
    assert phis[1] is phis[0] and phis[2] is phis[3] is phis[4] and phis[2] is not phis[1]


def test_import_names_what_does_not_fit(tmp_path):
    sd = var_state()
    sd["quantize.extra.weight"] = torch.zeros(2)
    torch.save(sd, tmp_path / "a.pth")
    with pytest.raises(ZoomSRError, match=r"fit no place in the model: quantize\.extra\.weight"):
        import_var(tmp_path / "a.pth", tmp_path / "o")
    del sd["quantize.extra.weight"], sd["decoder.up.1.block.0.conv2.bias"]
    torch.save(sd, tmp_path / "a.pth")
    with pytest.raises(ZoomSRError, match=r"lacks decoder\.up\.1\.block\.0\.conv2\.bias"):
        import_var(tmp_path / "a.pth", tmp_path / "o")
    torch.save(var_state(), tmp_path / "a.pth")
    with pytest.raises(ZoomSRError, match=r"has 10 rows, one per scale"):
        import_var(tmp_path / "a.pth", tmp_path / "o", patch_nums=(1, 2, 4, 16))


def test_iter_refiner_trains_on_var_tokens(imported, tmp_path):
    """The vq_refiner backbone with tokenizer=var: its token targets are the VAR tokenizer's."""
    from zoomsr.backbones.vq_refiner import VQRefiner

    sd, out = imported
    net = VQRefiner(
        scale=4, stage="iter", vqgan_ckpt=str(out / "var_vqvae.safetensors"), tokenizer="var",
        channels=[32, 32, 64], blocks=1, groups=32, embed_dim=8, codebook_size=64,
        quantizer="msrq", patch_nums=list(VAR_PATCH_NUMS), dim=32, depth=1, heads=2, steps=2,
        seed=0,
    )  # fmt: skip
    hr = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    lr = F.avg_pool2d(hr, 4)
    outs = net.training_outputs(lr, hr)
    want = torch.cat([t.flatten(1) for t in load_var_vqvae(out).encode_tokens(hr * 2 - 1)], 1)
    assert torch.equal(outs["hr_tokens"], want)
    assert outs["lq_logits"].shape == (1, sum(p * p for p in VAR_PATCH_NUMS), 64)
    assert net.upscale(lr).shape == (1, 3, 64, 64)
