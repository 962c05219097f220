"""benchmarks/bench_sd3_train_memory.py's step on the tiny SD3: zoomsr's design and CoZ's
three-copy design run the same step (the script's figures are only comparable if they do)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_benchmark
from zoomsr.backbones.sd3_tiny import ensure_tiny_sd3


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_sd3_train_memory")


def run(bench, capsys, design: str, text_encoders: str = "on_demand") -> dict:
    bench.measure(ensure_tiny_sd3(), 32, text_encoders, True, design, "bfloat16")
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_both_designs_take_the_same_step_and_report_every_phase(bench, capsys):
    ours, coz = run(bench, capsys, "zoomsr"), run(bench, capsys, "coz")
    assert ours["loss"] == coz["loss"]  # bit for bit: same math, only the copies differ
    assert ours["trained_params"] == coz["trained_params"] > 0
    for result in (ours, coz):
        phases = result["phase_peak_rss_gb"]
        assert set(phases) >= {"build", "forward", "backward", "optimizer"}
        assert 0 < max(phases.values()) <= result["peak_rss_gb"] + 0.05
        assert 0 < result["forward_s"] <= result["step_s"]
        assert result["design"] in ("zoomsr", "coz") and result["vae_dtype"] == "bfloat16"


def test_keeping_the_text_encoders_is_the_same_step(bench, capsys):
    lazy, kept = run(bench, capsys, "zoomsr"), run(bench, capsys, "zoomsr", "keep")
    assert lazy["loss"] == kept["loss"]
    assert kept["text_encoders"] == "keep" and lazy["text_encoders"] == "on_demand"
