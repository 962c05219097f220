"""benchmarks/bench_grpo_memory.py's code path on the tiny Qwen2.5-VL, so the 3B run cannot rot:
one real GRPO step with the shared critic, every phase timed and measured."""

from __future__ import annotations

import math

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_grpo_memory")


def test_one_grpo_step_reports_every_phase(bench):
    from safetensors import safe_open

    from zoomsr.prompts.tiny import ensure_tiny_vlm

    tiny = ensure_tiny_vlm()
    result = bench.measure(tiny, group=3, max_new_tokens=4, process_size=56, threads=1)
    assert set(result["phases"]) == {"build", *bench.PHASES}
    peak = result["peak_rss_gb"]
    for name, phase in result["phases"].items():
        assert phase["s"] > 0, name
        # the kernel's high-water mark (ru_maxrss) is updated lazily: within 1% of a sample
        assert 0.1 < phase["peak_rss_gb"] <= 1.01 * phase["ru_maxrss_gb"], name
        assert phase["ru_maxrss_gb"] <= peak < 24, name
        assert 0 < phase["peak_anon_gb"] <= phase["peak_rss_gb"], name
    assert result["step_s"] == pytest.approx(sum(result["phases"][p]["s"] for p in bench.PHASES))
    with safe_open(str(tiny / "model.safetensors"), "pt") as f:
        names = f.keys()  # safe_open is not iterable
        stored = sum(math.prod(f.get_slice(k).get_shape()) for k in names)
    assert result["policy_params"] == stored and result["critic_own_params"] == 0
    # LoRA r=8 on q/k/v/o of 2 layers (32 wide; k, v: one 16-wide head): 2 * 8 * (64+48+48+64)
    assert result["lora_params"] == 2 * 8 * (64 + 48 + 48 + 64)
    s = result["settings"]
    assert s["view_px"] == [[56, 56], [56, 56]] and s["image_ids"] == 2 * 4  # 2x2 merged
    assert s["group"] == 3 and s["prompt_ids"] > s["image_ids"]
    m = result["metrics"]
    assert math.isfinite(m["train/loss"]) and 0 <= m["train/reward/critic"] <= 1
    assert 1 <= m["train/length"] <= 4


def test_arithmetic_uses_the_published_parameter_counts(bench):
    a = bench.grpo_arithmetic()
    assert a["qwen3b_params"] == 3_754_622_976 and a["qwen7b_params"] == 8_292_166_656
    assert a["policy_bf16_gb"] == pytest.approx(7.51, abs=0.01)
    assert a["total_7b_critic_gb"] == pytest.approx(25.9, abs=0.1)  # over the 24 GB machine
