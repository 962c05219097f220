"""evaluate.py over 2 CPU processes (gloo) equals 1 process: metrics.json, per-image CSV, FID,
and a resume after a kill."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.integration.test_evaluate_protocols import _cfg, tiny_fid  # noqa: F401 (a fixture)
from zoomsr.tasks import evaluate


def _files(out):
    return json.loads((out / "metrics.json").read_text()), (out / "per_image.csv").read_text()


@pytest.mark.usefixtures("single_thread", "tiny_fid")
def test_two_processes_equal_one_with_fid_and_resume_after_a_kill(
    compose_cfg, bench, tmp_path, capsys
):
    common = [
        "protocol=zoom_full",
        "scales=[4,16]",
        f"data.hr_dir={bench / 'Set5' / 'HR'}",
        "metrics.names=[psnr_y,ssim_y,fid]",
    ]
    one = evaluate.run(_cfg(compose_cfg, tmp_path / "one", *common))
    # ddp_fork: the ranks inherit the tiny FID network; ddp_spawn (the default) rebuilds it
    two_args = [*common, "devices=2", "strategy=ddp_fork"]
    out = tmp_path / "two"
    two = evaluate.run(_cfg(compose_cfg, out, *two_args))
    assert "[zoomsr] 2 ranks computed 6 + 4 rows" in capsys.readouterr().out  # 5 images x 2
    assert two == one and np.isfinite(two["x4"]["fid"]) and np.isfinite(two["x16"]["fid"])
    assert _files(out) == _files(tmp_path / "one")  # metrics.json and per_image.csv, to the byte
    rows = (out / "results.jsonl").read_text().splitlines()
    assert len(rows) == 10 and not list(out.glob("results.rank*.jsonl"))

    # killed while both ranks were writing: 5 rows merged before, 2 in rank 1's own file and a
    # line cut short; the rest (3 rows) lost with the summary
    (out / "results.jsonl").write_text("\n".join(rows[:5]) + "\n")
    (out / "results.rank1.jsonl").write_text("\n".join(rows[5:7]) + '\n{"scale": 16, "ima')
    (out / "metrics.json").unlink()
    again = evaluate.run(_cfg(compose_cfg, out, *two_args))
    assert "[zoomsr] 2 ranks computed 2 + 1 rows" in capsys.readouterr().out  # only the lost 3
    assert again == one and _files(out) == _files(tmp_path / "one")
    # one process resumes a distributed run's folder the same way
    (out / "results.jsonl").write_text("\n".join(rows[:8]) + "\n")
    (out / "metrics.json").unlink()
    assert evaluate.run(_cfg(compose_cfg, out, *common)) == one


@pytest.mark.usefixtures("single_thread", "tiny_fid")
def test_zoom_center_chains_shard_by_image_and_equal_one_process(compose_cfg, bench, tmp_path):
    """Chain-of-Zoom's centre chain: one image's whole chain runs on one rank."""
    common = [
        "protocol=zoom_center",
        "scales=[1,4]",
        "zoom.process_size=64",
        "protocol.fid_patch=16",
        f"data.hr_dir={bench / 'Set5' / 'HR'}",
        "metrics.names=[psnr_y,fid]",
    ]
    one = evaluate.run(_cfg(compose_cfg, tmp_path / "one", *common))
    two = evaluate.run(
        _cfg(compose_cfg, tmp_path / "two", *common, "devices=2", "strategy=ddp_fork")
    )
    assert two == one and np.isfinite(two["x1"]["fid"])
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


@pytest.mark.slow  # a fresh process imports torch, Lightning and the metrics (15-60 s on 2 cores)
@pytest.mark.usefixtures("single_thread")
def test_spawned_ranks_equal_one_process(compose_cfg, bench, tmp_path):
    """The default start method: rank 1 is a fresh process that rebuilds the evaluation from
    the resolved config (as evaluate.py devices=2 runs it)."""
    common = ["scales=[4]", f"data.hr_dir={bench / 'Set5' / 'HR'}", "metrics.names=[psnr_y,ssim_y]"]
    one = evaluate.run(_cfg(compose_cfg, tmp_path / "one", *common))
    two = evaluate.run(_cfg(compose_cfg, tmp_path / "two", *common, "devices=2"))
    assert two == one and two["x4"]["n_images"] == 5
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


def test_bad_devices_or_strategy_is_one_line(compose_cfg, bench, tmp_path):
    from zoomsr.errors import ZoomSRError

    hr = f"data.hr_dir={bench / 'Set5' / 'HR'}"
    with pytest.raises(ZoomSRError, match=r"devices=0: the number of evaluation processes"):
        evaluate.run(_cfg(compose_cfg, tmp_path / "a", hr, "scales=[4]", "devices=0"))
    with pytest.raises(ZoomSRError, match=r"strategy=fsdp: one of \['auto', 'ddp_spawn'"):
        evaluate.run(_cfg(compose_cfg, tmp_path / "b", hr, "scales=[4]", "strategy=fsdp"))
    with pytest.raises(ZoomSRError, match=r"strategy=ddp joins ranks started by torchrun"):
        evaluate.run(_cfg(compose_cfg, tmp_path / "c", hr, "scales=[4]", "strategy=ddp"))


@pytest.mark.slow  # three interpreters start (torchrun and its two ranks)
@pytest.mark.usefixtures("single_thread")
def test_ranks_started_by_torchrun_equal_one_process(compose_cfg, bench, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import ROOT

    common = ["scales=[4]", f"data.hr_dir={bench / 'Set5' / 'HR'}", "metrics.names=[psnr_y,ssim_y]"]
    one = evaluate.run(_cfg(compose_cfg, tmp_path / "one", *common))
    out = tmp_path / "torchrun"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "--master-port", "29611", "evaluate.py",
         "backbone=bicubic", "logger=csv", "strategy=ddp", f"out_dir={out}", *common],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 ranks computed 3 + 2 rows" in proc.stdout
    assert _files(out) == _files(tmp_path / "one")
    assert json.loads((out / "metrics.json").read_text()) == one
