"""ITER as published: the release layout, the import of a release-layout file, ITER's sampling
schedule and the evaluator's 2-class head.

The release figures below were measured by building ITER's own ``ITER`` class
(chaofengc/ITER, ``basicsr/archs/iter_arch.py``) with ``options/train_ITER_LQ_stage_X{2,4}.yml``
and counting its state dict; the tests check zoomsr's model against them.
"""

from __future__ import annotations

import math

import pytest
import torch

from zoomsr.backbones.iter import ITER, kept_budget
from zoomsr.checkpoint import load_backbone
from zoomsr.errors import ZoomSRError
from zoomsr.interop.iter import main as import_main

#: ITER's state dict, release config: entries per top-level module (without the
#: ``vqgan.generator.*`` alias of the decoder, 213 more entries) and parameters.
RELEASE = {
    2: {"entries": {"vqgan": 427, "lq_encoder": 272, "token_refine_net": 924},
        "params": {"vqgan": 71_103_843, "lq_encoder": 6_814_432, "token_refine_net": 52_077_186}},
    4: {"entries": {"vqgan": 427, "lq_encoder": 254, "token_refine_net": 924},
        "params": {"vqgan": 71_103_843, "lq_encoder": 4_140_512, "token_refine_net": 52_077_186}},
}  # fmt: skip

#: A tiny config of the same classes (CPU tests): 4 x 4 tokens for 32 px HR crops.
TINY = dict(
    nf=32, ch_mult=[1, 1, 1, 1], res_blocks=1, n_embed=16, embed_dim=8, swin_dim=32,
    swin_blocks=1, swin_depth=2, window=2, heads=2, resolution=4, lq_channels=32,
    lq_swin_blocks=1, lq_swin_depth=2, demask_dim=32, demask_blocks=1, demask_depth=2,
)  # fmt: skip


def tiny(scale: int = 4, **kw) -> ITER:
    return ITER(scale=scale, **{**TINY, **kw})


@pytest.mark.parametrize("scale", [2, 4])
def test_release_layout_matches_iter(scale):
    with torch.device("meta"):
        model = ITER(scale=scale)
    sd = model.state_dict()
    prefixes = {p: sum(k.startswith(p + ".") for k in sd) for p in RELEASE[scale]["entries"]}
    assert prefixes == RELEASE[scale]["entries"] and len(sd) == sum(prefixes.values())
    params = {
        p: sum(v.numel() for k, v in model.named_parameters() if k.startswith(p + "."))
        for p in RELEASE[scale]["params"]
    }
    assert params == RELEASE[scale]["params"]
    swin = 1 + int(math.log2(8 // scale)) + 1  # conv, stride-2 levels, 1x1 conv, Swin layers
    shapes = {
        "lq_encoder.model.0.weight": (64, 3, 3, 3),
        f"lq_encoder.model.{swin}.swin_blks.1.residual_group.blocks.5.attn_mask": (16, 64, 64),
        f"lq_encoder.model.{swin + 1}.weight": (512, 128, 1, 1),
        "token_refine_net.token_refine_net.code_emb.weight": (256, 513, 1, 1),
        "token_refine_net.token_crit_net.code_emb.weight": (256, 512, 1, 1),
        "token_refine_net.token_crit_net.conv_out.2.weight": (2, 256, 1, 1),
        "token_refine_net.token_crit_net.swin_layers.swin_blks.3.conv.weight": (256, 256, 3, 3),
        "vqgan.quantize.embedding.weight": (512, 128),
        "vqgan.encoder.blocks.13.swin_blks.0.residual_group.blocks.1.mlp.attn.0.weight": (
            64,
            1024,
        ),
        "vqgan.encoder.blocks.13.swin_blks.0.residual_group.blocks.0.attn."
        "relative_position_bias_table": (225, 8),
        "vqgan.decoder.blocks.2.conv_in.weight": (256, 512, 3, 3),
        "vqgan.decoder.blocks.16.weight": (3, 128, 3, 3),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes


def iter_file(model: ITER, path, with_vqgan: bool = True, extra: dict | None = None):
    """What ITER's ``save_network`` writes: ``{"params": state_dict}``, the decoder also under
    its ``generator`` alias."""
    sd = dict(model.state_dict())
    sd |= {"vqgan.generator." + k[len("vqgan.decoder.") :]: v for k, v in sd.items()
           if k.startswith("vqgan.decoder.")}  # fmt: skip
    if not with_vqgan:
        sd = {k: v for k, v in sd.items() if not k.startswith("vqgan.")}
    torch.save({"params": sd | (extra or {})}, path)
    return path


def test_import_consumes_every_key_and_rebuilds_the_model(tmp_path, capsys):
    src = tiny(seed=3)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    args = ["--ckpt", str(iter_file(src, tmp_path / "x4.pth")), "--out", str(tmp_path / "o")]
    assert import_main(args) == 0
    assert "iter_x4.ckpt" in capsys.readouterr().out
    model = load_backbone(tmp_path / "o" / "iter_x4.ckpt")
    own = model.state_dict()
    assert set(own) == set(src.state_dict())
    assert all(torch.equal(own[k], v) for k, v in src.state_dict().items())
    lr = torch.rand(1, 3, 8, 8)
    assert torch.equal(model.lq_tokens(lr), src.lq_tokens(lr))
    hr = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(model.reconstruct(hr), src.reconstruct(hr))
    assert model.upscale(torch.rand(1, 3, 10, 6)).shape == (1, 3, 40, 24)


def test_import_names_leftovers_and_missing_vqgan(tmp_path, capsys):
    src = tiny(seed=3)
    extra = {"token_refine_net.extra_head.weight": torch.zeros(2)}
    bad = iter_file(src, tmp_path / "bad.pth", extra=extra)
    with pytest.raises(SystemExit, match="2"):
        import_main(["--ckpt", str(bad), "--out", str(tmp_path / "o")])
    assert "left over ['token_refine_net.extra_head.weight']" in capsys.readouterr().err
    bare = iter_file(src, tmp_path / "bare.pth", with_vqgan=False)
    with pytest.raises(SystemExit, match="2"):
        import_main(["--ckpt", str(bare), "--out", str(tmp_path / "o")])
    assert "--vqgan" in capsys.readouterr().err
    # ITER_swinvqgan.pth: VQModel's own state dict (generator alias included).
    vq = {f"{k}": v for k, v in src.vqgan.state_dict().items()}
    vq |= {"generator." + k[8:]: v for k, v in vq.items() if k.startswith("decoder.")}
    torch.save({"params": vq}, tmp_path / "vq.pth")
    args = ["--ckpt", str(bare), "--vqgan", str(tmp_path / "vq.pth"), "--out", str(tmp_path / "o")]
    assert import_main(args) == 0
    model = load_backbone(tmp_path / "o" / "iter_x4.ckpt")
    assert torch.equal(model.vqgan.quantize.embedding.weight, src.vqgan.quantize.embedding.weight)


def expected_kept(n_trusted: int, steps: int, n: int) -> list[int]:
    """ITER's ``token_refine`` re-stated: pass i runs once int(i / T * N) >= trusted; the first
    pass shows the trusted tokens, each later one max(kept + 1, k_i) (``sample_t``)."""
    counts, kept = [], None
    for i in range(steps):
        k = int(i / steps * n)
        if k < n_trusted:
            continue
        kept = n_trusted if kept is None else kept + max(1, max(1, k) - kept)
        counts.append(kept)
    return counts


@pytest.mark.parametrize("alpha", [1.01, None, 0.0])
def test_sampling_keeps_what_iters_schedule_says(alpha, single_thread):
    model = tiny(seed=0).eval()
    lr = torch.rand(1, 3, 8, 8)
    logits = model.lq_logits(lr)
    p = model.p_right(logits.argmax(1), logits.argmax(1))
    model.alpha = float(p.flatten().sort().values[7]) if alpha is None else alpha  # 9 trusted
    out = model.sample(logits, torch.Generator().manual_seed(0))
    n_trusted = int((p >= model.alpha).sum())
    counts = [int(k.sum()) for k in out["kept"]]
    assert counts == expected_kept(n_trusted, 8, 16)
    assert int(out["passes"][0]) == len(counts) == len(out["tokens"]) - 1
    trusted = (p >= model.alpha)[:, 0]
    for before, after in zip(out["kept"], out["kept"][1:]):
        assert bool((before <= after).all())  # the kept set only grows
    assert all(bool((trusted <= k).all()) for k in out["kept"])
    if alpha == 0.0:  # everything trusted: no pass runs, the LQ tokens are the output
        assert counts == [] and torch.equal(out["tokens"][-1], logits.argmax(1))


def test_kept_budget_is_iters_float32_formula():
    for n in (16, 256, 1024, 4096):
        for i in range(8):
            assert kept_budget(i, 8, n, "linear") == int((1 - (1 - torch.tensor([i / 8]))) * n)
            cos = torch.cos(torch.tensor([i / 8]) * math.pi / 2)
            assert kept_budget(i, 8, n, "cosine") == int((1 - cos) * n)


def test_sampling_is_seeded_and_deterministic_option(single_thread):
    model = tiny(seed=0, alpha=1.01).eval()
    lr = torch.rand(1, 3, 8, 8)
    a = model.upscale(lr, generator=torch.Generator().manual_seed(1))
    b = model.upscale(lr, generator=torch.Generator().manual_seed(1))
    c = model.upscale(lr, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(model.upscale(lr), model.upscale(lr))  # default: seeded by `seed`
    det = tiny(seed=0, alpha=1.01, sampling="deterministic").eval()
    x = det.upscale(lr, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, det.upscale(lr, generator=torch.Generator().manual_seed(2)))


def test_evaluator_probability_is_the_stored_heads_softmax(tmp_path):
    src = tiny(seed=5)
    with torch.no_grad():
        head = src.token_refine_net.token_crit_net.conv_out[2]
        head.weight.normal_(0, 0.5)
        head.bias.normal_(0, 0.5)
    import_main(["--ckpt", str(iter_file(src, tmp_path / "x.pth")), "--out", str(tmp_path / "o")])
    model = load_backbone(tmp_path / "o" / "iter_x4.ckpt")
    stored = torch.load(tmp_path / "x.pth", weights_only=True)["params"]
    w = stored["token_refine_net.token_crit_net.conv_out.2.weight"]
    b = stored["token_refine_net.token_crit_net.conv_out.2.bias"]
    tokens = torch.randint(0, 16, (2, 4, 4))
    feats = {}
    crit = model.token_refine_net.token_crit_net
    hook = crit.conv_out[1].register_forward_hook(lambda m, i, o: feats.update(x=o))
    p = model.p_right(tokens, tokens)
    hook.remove()
    expected = torch.nn.functional.conv2d(feats["x"], w, b).softmax(1)[:, 1:]
    torch.testing.assert_close(p, expected)
    assert p.shape == (2, 1, 4, 4) and float(p.min()) < 0.5 < float(p.max())


def test_bad_values_are_named():
    with pytest.raises(ZoomSRError, match="stage"):
        tiny(stage="vqgan")
    with pytest.raises(ZoomSRError, match="power-of-two"):
        tiny(scale=3)
    with pytest.raises(ZoomSRError, match="vq_loss"):
        tiny(vq_loss="ema")
    with pytest.raises(ZoomSRError, match="not found"):
        tiny(vqgan_ckpt="/nonexistent/vqgan.safetensors")


def test_training_outputs_of_the_refine_stage(single_thread):
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    model = tiny(seed=0)
    out = model.training_outputs(lr, hr, seeds=torch.tensor([3, 4]))
    assert out["lq_logits"].shape == (2, 16, 16) and out["hr_tokens"].shape == (2, 16)
    assert out["eval_init_logits"].shape == (2, 16, 2) and out["refine_logits"].shape == (2, 16, 16)
    assert out["sr_all_signed"].shape == (4, 3, 32, 32)  # LQ and refined decodings, one batch
    # ITER's hidden share: max(1, int(cos(u pi / 2) N)) of N = 16, in (0, 1].
    assert bool(((out["refine_weight"] > 0) & (out["refine_weight"] <= 1)).all())
    again = model.training_outputs(lr, hr, seeds=torch.tensor([3, 4]))
    assert torch.equal(out["refine_weight"], again["refine_weight"])  # per-sample seeds
    # ITER's `.long()` cuts the LQ Gumbel decoding from the graph; the refined one trains.
    assert not out["sr"].requires_grad and out["refined"].requires_grad
    assert tiny(seed=0, gumbel_lq_grad=True).training_outputs(lr, hr)["sr"].requires_grad
    assert not any(p.requires_grad for p in model.vqgan.parameters())  # frozen Swin-VQGAN


def test_shifted_swin_block_matches_a_naive_restatement():
    """Swin's shifted-window block, written out position by position (Liu et al. 2021, Sec.
    3.2 and Eq. 4; ITER's SE-gated MLP): roll by -s, attend within ws x ws windows with the
    relative-position bias B[dy + ws - 1, dx + ws - 1] and -100 between the three bands of each
    axis, roll back; then the MLP with the gate sigmoid(W2 silu(W1 mean_N h))."""
    from zoomsr.backbones.iter_arch import SwinBlock

    torch.manual_seed(0)
    c, heads, ws, s, hgt, wid = 8, 2, 2, 1, 4, 6
    block = SwinBlock(c, (hgt, wid), heads, ws, s)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(1, hgt * wid, c)
    table = block.attn.relative_position_bias_table.detach()
    qkv_w, qkv_b = block.attn.qkv.weight.detach(), block.attn.qkv.bias.detach()
    d = c // heads
    y = torch.nn.functional.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias)
    grid = y.view(hgt, wid, c)

    def band(i: int, n: int) -> int:
        return 0 if i < n - ws else (1 if i < n - s else 2)

    out = torch.zeros(hgt, wid, c)
    for wi in range(0, hgt, ws):
        for wj in range(0, wid, ws):
            pos = [(i, j) for i in range(wi, wi + ws) for j in range(wj, wj + ws)]  # rolled
            feats = torch.stack([grid[(i + s) % hgt, (j + s) % wid] for i, j in pos])
            q, k, v = (feats @ qkv_w.t() + qkv_b).split(c, dim=-1)
            heads_out = []
            for h in range(heads):
                sl = slice(h * d, (h + 1) * d)
                logits = torch.zeros(len(pos), len(pos))
                for a, (ia, ja) in enumerate(pos):
                    for b, (ib, jb) in enumerate(pos):
                        rel = (ia - ib + ws - 1) * (2 * ws - 1) + (ja - jb + ws - 1)
                        same = band(ia, hgt) == band(ib, hgt) and band(ja, wid) == band(jb, wid)
                        logits[a, b] = (q[a, sl] @ k[b, sl]) * d**-0.5 + table[rel, h]
                        logits[a, b] += 0.0 if same else -100.0
                heads_out.append(logits.softmax(-1) @ v[:, sl])
            res = block.attn.proj(torch.cat(heads_out, dim=-1))
            for a, (i, j) in enumerate(pos):
                out[(i + s) % hgt, (j + s) % wid] = res[a]
    x1 = x + out.view(1, -1, c)
    h = torch.nn.functional.layer_norm(x1, (c,), block.norm2.weight, block.norm2.bias)
    h = torch.nn.functional.gelu(block.mlp.fc1(h))
    gate = block.mlp.attn[3](
        block.mlp.attn[2](torch.nn.functional.silu(block.mlp.attn[0](h.mean(1, keepdim=True))))
    )
    expected = x1 + block.mlp.fc2(h * gate)
    with torch.no_grad():
        torch.testing.assert_close(block(x, (hgt, wid)), expected, atol=1e-5, rtol=1e-5)
        # another map size: the mask is computed for it, not the stored one
        x2 = torch.randn(2, 4 * 4, c)
        assert block(x2, (4, 4)).shape == (2, 16, c)
