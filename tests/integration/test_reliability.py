"""Issue #11's regressions, one test (or a few) per item, each asserting what a user sees: the
exit code, the one-line message naming the thing and the fix, files unchanged or correct.

(Item 1, crafted checkpoints, is tests/integration/test_hostile.py.)
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT
from tests.integration.test_hostile import TINY, TINY_OVERRIDES, write_ckpt
from zoomsr.data.io import load_image
from zoomsr.errors import ZoomSRError, check_overrides, exit_on_user_error, user_message
from zoomsr.reporting import ResultLog
from zoomsr.tasks import evaluate, infer, train


def _images(folder: Path, names=("a.png", "b.png"), size=(32, 32)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / name)
    return folder


def _eval(compose_cfg, hr, out, *extra):
    return evaluate.run(compose_cfg("evaluate", [f"data.hr_dir={hr}", f"out_dir={out}",
                                                 "logger=csv", "scales=[2]", *extra]))  # fmt: skip


def _one_line(fn, capsys) -> str:
    """Run ``fn`` through the entry points' wrapper: exit 2 and exactly one line."""
    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(fn)()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("zoomsr error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- 2. a resume must be the same job --------------------------------------------------------
def test_2_another_job_in_the_same_folder_is_refused(compose_cfg, tmp_path, capsys):
    hr = _images(tmp_path / "hr")
    out = tmp_path / "out"
    bicubic = _eval(compose_cfg, hr, out)
    rows = (out / "results.jsonl").read_bytes()
    message = _one_line(lambda: _eval(compose_cfg, hr, out, "backbone=nearest"), capsys)
    assert f"output folder '{out}' holds results of another job (different backbone)" in message
    assert "overwrite=true" in message and "new out_dir" in message
    assert (out / "results.jsonl").read_bytes() == rows  # untouched
    other = _images(tmp_path / "hr2", names=("c.png",))
    assert "different data" in _one_line(lambda: _eval(compose_cfg, other, out), capsys)
    # overwrite=true: nearest's own numbers, not bicubic's
    nearest = _eval(compose_cfg, hr, out, "backbone=nearest", "overwrite=true")
    fresh = _eval(compose_cfg, hr, tmp_path / "fresh", "backbone=nearest")
    assert nearest["x2"]["psnr_y"] == fresh["x2"]["psnr_y"] != bicubic["x2"]["psnr_y"]
    assert nearest["x2"]["n_images"] == 2
    # the same job resumes (adding a scale is the same job)
    again = _eval(compose_cfg, hr, out, "backbone=nearest", "scales=[2,3]")
    assert again["x2"] == nearest["x2"] and again["x3"]["n_images"] == 2


# -- 3. one run per folder; duplicate rows dropped -------------------------------------------
def test_3_a_second_concurrent_run_refuses(compose_cfg, tmp_path, capsys):
    hr = _images(tmp_path / "hr")
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from zoomsr.runfolder import RunLock; "
         f"lock = RunLock({str(out)!r}); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        message = _one_line(lambda: _eval(compose_cfg, hr, out), capsys)
        assert f"'{out}' is in use by another run (pid {holder.pid})" in message
        assert not (out / "results.jsonl").exists()
    finally:
        holder.kill()  # kill -9: the system releases the lock
        holder.wait()
    assert _eval(compose_cfg, hr, out)["x2"]["n_images"] == 2


def test_3_duplicate_rows_are_dropped_on_load(compose_cfg, tmp_path):
    hr = _images(tmp_path / "hr")
    out = tmp_path / "out"
    first = _eval(compose_cfg, hr, out)
    lines = (out / "results.jsonl").read_text().splitlines()
    # two runs appending at once: every row twice, one with other values
    doubled = [*lines, *lines, json.dumps({**json.loads(lines[0]), "psnr_y": 99.0})]
    (out / "results.jsonl").write_text("\n".join(doubled) + "\n")
    assert len(ResultLog(out / "results.jsonl").rows) == 2
    again = _eval(compose_cfg, hr, out)
    assert again["x2"]["n_images"] == 2 and again["x2"]["psnr_y"] == first["x2"]["psnr_y"]
    assert (out / "results.jsonl").read_text().splitlines() == lines


def test_3_chain_rerun_replaces_an_incomplete_folder_without_leftovers(compose_cfg, tmp_path):
    src = _images(tmp_path / "in", names=("im0.png",), size=(40, 40))
    out = tmp_path / "out"
    args = [f"input={src}", f"out_dir={out}", "backbone=bicubic", "zoom.process_size=32",
            "zoom.steps=2"]  # fmt: skip
    infer.run(compose_cfg("infer", args))
    (out / "im0" / "prompts.json").unlink()  # an incomplete folder (e.g. copied in half)
    infer.run(compose_cfg("infer", args))
    assert json.loads((out / "im0" / "prompts.json").read_text())["steps"][0]["step"] == 0
    assert not [p for p in out.iterdir() if ".partial" in p.name or ".old" in p.name]


# -- 4. a truncated output is not done -------------------------------------------------------
def test_4_a_truncated_output_is_made_again(compose_cfg, tmp_path):
    src = _images(tmp_path / "in", names=("im0.png",), size=(20, 24))
    out = tmp_path / "out"
    args = [f"input={src}", f"out_dir={out}", "zoom=full", "backbone=bicubic", "scale=2"]
    infer.run(compose_cfg("infer", args))
    good = (out / "im0_x2.png").read_bytes()
    (out / "im0_x2.png").write_bytes(good[: len(good) // 2])  # killed during the save
    infer.run(compose_cfg("infer", args))
    assert (out / "im0_x2.png").read_bytes() == good
    assert sorted(p.name for p in out.iterdir()) == [".zoomsr.lock", "im0_x2.png",
                                                     "zoomsr_job.json"]  # fmt: skip


def test_4_outputs_are_written_under_a_temporary_name(tmp_path, monkeypatch):
    """A save that dies part-way leaves nothing under the final name (and no temporary)."""
    from zoomsr.data.io import save_image

    def dies(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        save_image(torch.rand(3, 8, 8), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


# -- 5. same stems, reserved names ------------------------------------------------------------
def test_5_same_stem_files_get_unique_names(compose_cfg, tmp_path):
    src = _images(tmp_path / "in", names=("x.png", "x.jpg", "x.PNG", ".hydra.png"), size=(16, 16))
    out = tmp_path / "out"
    result = infer.run(compose_cfg("infer", [f"input={src}", f"out_dir={out}", "zoom=full",
                                             "backbone=bicubic", "scale=2"]))  # fmt: skip
    names = sorted(Path(p).name for p in result["outputs"])
    assert names == ["_hydra_x2.png", "x_jpg_x2.png", "x_png_x2.png", "x_x2.png"]
    for inp, outp in [
        ("x.PNG", "x_x2.png"),
        ("x.png", "x_png_x2.png"),
        (".hydra.png", "_hydra_x2.png"),
    ]:
        want = load_image(src / inp)
        got = load_image(out / outp)
        assert got.shape[-2:] == (32, 32) and abs(got.mean() - want.mean()) < 0.02
    metrics = _eval(compose_cfg, src, tmp_path / "eval")
    assert metrics["x2"]["n_images"] == 4
    assert sorted(metrics["x2"]["images"]) == ["_hydra", "x", "x_jpg", "x_png"]


# -- 6. values accepted silently --------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "overrides", "message"),
    [
        ("evaluate", ["scales=[2.5]"], "scales=[2.5] is not valid: scales are integers >= 1"),
        ("infer", ["zoom.upscale=0"], "zoom.upscale=0 is not valid: it must be an integer >= 2"),
        ("infer", ["zoom.steps=100"], "the largest zoom.steps for zoom.process_size=512 and x4 "
                                      "steps is 4"),
        ("train", ["trainer.max_steps=0"], "trainer.max_steps=0 trains nothing"),
    ],
)  # fmt: skip
def test_6_silently_accepted_values_are_errors(compose_cfg, tmp_path, capsys, task, overrides,
                                               message):  # fmt: skip
    hr = _images(tmp_path / "hr")
    base = {"evaluate": [f"data.hr_dir={hr}", "logger=csv"], "infer": [f"input={hr}"],
            "train": [f"data.hr_dir={hr}", "logger=csv", *TINY_OVERRIDES]}[task]  # fmt: skip
    cfg = compose_cfg(task, [*base, f"out_dir={tmp_path / 'out'}", *overrides])
    line = _one_line(lambda: {"evaluate": evaluate, "infer": infer, "train": train}[task].run(cfg),
                     capsys)  # fmt: skip
    assert message in line
    assert not (tmp_path / "out").exists()  # refused before anything was written


# -- 7. a checkpoint's own scale by default ----------------------------------------------------
def test_7_a_checkpoint_is_evaluated_at_its_own_scale_by_default(compose_cfg, tmp_path):
    ckpt = write_ckpt(tmp_path / "x4.ckpt", {"_target_": "zoomsr.backbones.sr3.SR3", **TINY})
    hr = _images(tmp_path / "hr", names=("a.png",), size=(128, 128))
    args = [f"ckpt={ckpt}", f"data.hr_dir={hr}", "logger=csv"]
    result = evaluate.run(compose_cfg("evaluate", [*args, f"out_dir={tmp_path / 'b'}"]))
    assert [k for k in result if k != "suite"] == ["x4"] and result["x4"]["n_images"] == 1
    # zoom_full: the powers of x4 whose LR is >= 8 px (128 / 16 = 8; 128 / 64 = 2 is not)
    zoom = evaluate.run(compose_cfg("evaluate", [*args, f"out_dir={tmp_path / 'z'}",
                                                 "protocol=zoom_full"]))  # fmt: skip
    assert [k for k in zoom if k != "suite"] == ["x4", "x16"]


# -- 8. compile=true ---------------------------------------------------------------------------
def test_8_compile_trains_a_step(compose_cfg, tmp_path):
    hr = _images(tmp_path / "hr", size=(48, 48))
    result = train.run(compose_cfg("train", [f"data.hr_dir={hr}", "data.crop_size=16",
                                             "data.batch_size=2", "data.num_workers=0",
                                             *TINY_OVERRIDES, "trainer=cpu",
                                             "trainer.max_steps=1", "compile=true", "logger=csv",
                                             f"out_dir={tmp_path / 'run'}"]))  # fmt: skip
    assert np.isfinite(result["train/loss"]) and Path(result["last_ckpt"]).is_file()
    # compiled in place: the checkpoint's keys are the plain module's (no "_orig_mod.")
    from zoomsr.checkpoint import load_backbone

    assert load_backbone(result["last_ckpt"]).scale == 4


# -- 9. EMA swap is exception-safe -------------------------------------------------------------
def test_9_a_failing_validation_leaves_the_training_weights(compose_cfg):
    from zoomsr.backbones.sr3 import SR3
    from zoomsr.modules.sr_module import SRModule

    net = SR3(**TINY)
    module = SRModule(net, {"l": torch.nn.L1Loss()}, optimizer=torch.optim.Adam, ema_decay=0.5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)  # training weights now differ from the EMA shadow
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory while sampling")

    net.upscale = broken
    module.on_validation_epoch_start()
    batch = {"lr": torch.rand(1, 3, 8, 8), "hr": torch.rand(1, 3, 32, 32)}
    with pytest.raises(RuntimeError, match="out of memory"):
        module.validation_step(batch, 0)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# -- 10. huge images ---------------------------------------------------------------------------
def _bomb(path: Path, side: int = 20000) -> Path:
    """A PNG whose header claims ``side x side`` (a few hundred bytes on disk)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))  # fmt: skip
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


def test_10_a_huge_image_is_one_line_and_skipped_in_a_folder(compose_cfg, tmp_path, capsys):
    src = _images(tmp_path / "in", names=("ok.png",), size=(16, 16))
    bomb = _bomb(src / "bomb.png")
    with pytest.raises(
        ZoomSRError,
        match=r"image '.*bomb\.png' is 20000x20000 \(400 megapixels"
        r"\), above the limit of 67 megapixels: set ZOOMSR_MAX_PIXELS=",
    ):
        load_image(bomb)
    args = ["zoom=full", "backbone=bicubic", "scale=2"]
    result = infer.run(compose_cfg("infer", [f"input={src}", f"out_dir={tmp_path / 'o'}", *args]))
    assert result["skipped"] == [str(bomb)] and [Path(p).name for p in result["outputs"]] == [
        "ok_x2.png"
    ]
    capsys.readouterr()
    line = _one_line(lambda: infer.run(compose_cfg("infer", [f"input={bomb}",
                                                             f"out_dir={tmp_path / 'o2'}",
                                                             *args])), capsys)  # fmt: skip
    assert "bomb.png' is 20000x20000" in line and "ZOOMSR_MAX_PIXELS" in line


def test_10_the_pixel_limit_override(tmp_path, monkeypatch):
    img = _images(tmp_path, names=("a.png",), size=(20, 10)) / "a.png"
    monkeypatch.setenv("ZOOMSR_MAX_PIXELS", "199")
    with pytest.raises(ZoomSRError, match=r"is 20x10 .*ZOOMSR_MAX_PIXELS=200"):
        load_image(img)
    monkeypatch.setenv("ZOOMSR_MAX_PIXELS", "200")
    assert load_image(img).shape == (3, 10, 20)
    monkeypatch.setenv("ZOOMSR_MAX_PIXELS", "0")  # no limit: the bomb is then a read error
    with pytest.raises(ZoomSRError, match=r"cannot read image .*bomb\.png"):
        load_image(_bomb(tmp_path / "bomb.png", side=3000))


def test_10_images_never_become_float64(tmp_path):
    """Every mode is converted in float32, in place (no whole-image float64 copy: a 1000x1000
    RGB image peaks near its 12 MB float32 array, where float64 alone would be 24 MB), with the
    values a float64 division gives."""
    import tracemalloc

    from zoomsr.data import io

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    wide = rgb[..., 0].astype(np.uint16) * 257
    modes = [Image.fromarray(rgb), Image.fromarray(rgb).convert("RGBA"),
             Image.fromarray(rgb[..., 0]), Image.fromarray(wide)]  # fmt: skip
    for img in modes:
        out = io._to_array(img, keep_gray=True)
        assert out.dtype == np.float32
        if img.mode == "I;16":
            want = np.asarray(img, dtype=np.float64) / 65535.0
        else:
            want = np.asarray(img.convert("RGB") if img.mode != "L" else img, np.float64) / 255.0
        np.testing.assert_array_equal(out, want.astype(np.float32))
    big = Image.fromarray(rng.integers(0, 256, (1000, 1000, 3), dtype=np.uint8))
    tracemalloc.start()
    io._to_array(big, keep_gray=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 18e6, peak


# -- 11. remote VLM: bounded and one line ------------------------------------------------------
class RawServer:
    """A TCP server answering every connection with ``respond(conn)``; counts connections."""

    def __init__(self, respond):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.connections = 0
        self.respond = respond
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            _read_request(conn)  # all of it: unread bytes would make close() a reset
            self.respond(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()


def _read_request(conn) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


def _trickle(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(100):
        conn.sendall(b" ")
        time.sleep(0.1)


def _ok(body: bytes):
    return lambda conn: conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


@pytest.mark.parametrize(
    ("respond", "message"),
    [
        (_trickle, r"no complete reply within prompt.timeout=1 s"),
        (lambda c: c.sendall(b"GARBAGE\r\n\r\n"), r"BadStatusLine"),
        (lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"choi"),
         r"IncompleteRead"),
        (_ok(json.dumps({"choices": [{"message": {"content": "x" * 200_000}}]}).encode()),
         r"the reply exceeds prompt.max_reply_bytes=65536"),
    ],
    ids=["trickle", "bad_status_line", "incomplete_read", "huge_reply"],
)  # fmt: skip
def test_11_remote_failures_are_one_line_bounded_and_retried(tmp_path, respond, message):
    from zoomsr.prompts.remote_vlm import RemoteVLMPrompt

    server = RawServer(respond)
    try:
        source = RemoteVLMPrompt(base_url=server.url, timeout=1.0, retries=1,
                                 cache=str(tmp_path / "cache.jsonl"))  # fmt: skip
        start = time.monotonic()
        with pytest.raises(
            ZoomSRError, match=rf"failed 2 time\(s\), 1 s each at most: .*{message}"
        ):
            source([torch.rand(1, 3, 8, 8)], step=1)
        assert time.monotonic() - start < 6  # 2 tries of 1 s + 0.5 s between, not 100 s
        assert server.connections == 3  # the reachability probe + 2 tries
        assert not (tmp_path / "cache.jsonl").exists()  # nothing cached
    finally:
        server.close()


# -- 12. one line and exit 2 where promised ----------------------------------------------------
def test_12_an_image_smaller_than_the_shave_is_named(compose_cfg, tmp_path, capsys):
    hr = _images(tmp_path / "hr", names=("big.png",), size=(32, 32))
    _images(hr, names=("tiny.png",), size=(6, 6))
    line = _one_line(lambda: _eval(compose_cfg, hr, tmp_path / "o", "scales=[4]"), capsys)
    assert "image 'tiny' is 4x4, too small for the metrics' border of 4 px" in line
    assert "protocol.shave=0" in line


@pytest.mark.parametrize(
    ("task", "overrides", "message"),
    [
        ("train", ["optim.lr=-0.001"], "optim.lr=-0.001 is not valid: it must be a number >= 0"),
        ("infer", ["zoom.process_size=0"], "zoom.process_size=0 is not valid"),
        ("evaluate", ["scales=[x4]"], "scales=['x4'] is not valid: scales are integers >= 1, "
                                      "e.g. scales=[2,3,4] (write 4, not x4)"),
        ("evaluate", ["scale=0"], "scale=0 is not valid: it must be an integer >= 1"),
    ],
)  # fmt: skip
def test_12_bad_values_are_one_line(compose_cfg, tmp_path, capsys, task, overrides, message):
    hr = _images(tmp_path / "hr")
    base = {"evaluate": [f"data.hr_dir={hr}", "logger=csv"], "infer": [f"input={hr}"],
            "train": [f"data.hr_dir={hr}", "logger=csv", *TINY_OVERRIDES]}[task]  # fmt: skip
    cfg = compose_cfg(task, [*base, f"out_dir={tmp_path / 'out'}", *overrides])
    run = {"evaluate": evaluate, "infer": infer, "train": train}[task].run
    assert message in _one_line(lambda: run(cfg), capsys)


def test_12_a_checkpoint_of_another_architecture(compose_cfg, tmp_path, capsys):
    wide = {**TINY, "inner_channel": 16}
    from zoomsr.backbones.sr3 import SR3

    state = {f"backbone.{k}": v for k, v in SR3(**wide).trainable_state_dict().items()}
    ckpt = write_ckpt(tmp_path / "c.ckpt", {"_target_": "zoomsr.backbones.sr3.SR3", **TINY},
                      {"state_dict": state, "global_step": 0})  # fmt: skip
    hr = _images(tmp_path / "hr")
    line = _one_line(lambda: _eval(compose_cfg, hr, tmp_path / "o", f"ckpt={ckpt}",
                                   "scales=[4]"), capsys)  # fmt: skip
    assert f"checkpoint '{ckpt}' holds weights of another architecture" in line


def test_12_train_resume_from_another_architecture(compose_cfg, tmp_path, capsys):
    hr = _images(tmp_path / "hr", size=(48, 48))

    def args(out, *extra):
        return [f"data.hr_dir={hr}", "data.crop_size=16", "data.batch_size=2",
                "data.num_workers=0", *TINY_OVERRIDES, "trainer=cpu", "trainer.max_steps=1",
                "trainer.enable_progress_bar=false", "logger=csv", f"out_dir={out}",
                *extra]  # fmt: skip

    last = train.run(compose_cfg("train", args(tmp_path / "a")))["last_ckpt"]
    cfg = compose_cfg("train", args(tmp_path / "b", f"ckpt_path={last}", "trainer.max_steps=2",
                                    "backbone.inner_channel=16"))  # fmt: skip
    line = _one_line(lambda: train.run(cfg), capsys)
    assert f"ckpt_path '{last}' holds weights of another architecture" in line
    assert "resume with the backbone settings it was trained with" in line


def test_12_an_error_in_a_dataloader_worker_is_its_own_line(capsys):
    from torch.utils.data import DataLoader, Dataset

    class Broken(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise ZoomSRError("cannot read image 'x.png': truncated. Remove or replace the file.")

    def run():
        next(iter(DataLoader(Broken(), num_workers=1)))

    line = _one_line(run, capsys)
    assert line == ("zoomsr error: cannot read image 'x.png': truncated. Remove or replace "
                    "the file.")  # fmt: skip
    err = ZoomSRError("Caught ZoomSRError in DataLoader worker process 0.\nOriginal "
                      "Traceback (most recent call last):\n  File ...\n"
                      "zoomsr.errors.ZoomSRError: msg")  # fmt: skip
    assert user_message(err) == "msg"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backbone=bicubik"], "Could not find 'backbone/bicubik'; options of backbone: bicubic, "),
        (["scalez=4"], "'scalez' is not a config key (misspelled?)"),
        (["data.hr_dirr=x"], "'data.hr_dirr' is not a config key"),
    ],
)  # fmt: skip
def test_12_hydra_errors_are_one_line(capsys, argv, message):
    line = _one_line(lambda: check_overrides(ROOT / "conf", "evaluate", argv), capsys)
    assert message in line


def test_12_the_entry_point_checks_overrides_first(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "infer.py"), "zoom.stepz=3",
                           f"input={tmp_path}"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "zoomsr error: 'zoom.stepz' is not a config key (misspelled?); see `python <script>.py "
        "--cfg job` for the keys, or append a new key with +zoom.stepz=<value>."
    ]


# -- the same classes of defect elsewhere -----------------------------------------------------
@pytest.mark.parametrize(
    ("task", "overrides", "message"),
    [
        ("evaluate", ["protocol=zoom_center", "zoom.process_size=128", "scales=[4,16,64,256]"],
         "x256 zooms below one pixel of the zoom.process_size=128 square"),
        ("evaluate", ["protocol=zoom_center", "scales=[4,16,64,256,1024]"],
         "x1024 zooms below one pixel of the zoom.process_size=512 square"),
        ("evaluate", ["batch_size=0"], "batch_size=0 is not valid"),
        ("train", ["data.batch_size=0"], "data.batch_size=0 is not valid"),
        ("infer", ["zoom.tile_overlap=-2"], "zoom.tile_overlap=-2 is not valid"),
        ("evaluate", ["protocol.shave=-1"], "protocol.shave=-1 is not valid"),
    ],
)  # fmt: skip
def test_more_values_are_checked(compose_cfg, tmp_path, capsys, task, overrides, message):
    hr = _images(tmp_path / "hr")
    base = {"evaluate": [f"data.hr_dir={hr}", "logger=csv"], "infer": [f"input={hr}"],
            "train": [f"data.hr_dir={hr}", "logger=csv", *TINY_OVERRIDES]}[task]  # fmt: skip
    cfg = compose_cfg(task, [*base, f"out_dir={tmp_path / 'out'}", *overrides])
    run = {"evaluate": evaluate, "infer": infer, "train": train}[task].run
    assert message in _one_line(lambda: run(cfg), capsys)


def test_a_fresh_training_into_a_used_run_folder_is_refused(compose_cfg, tmp_path, capsys):
    hr = _images(tmp_path / "hr", size=(48, 48))
    out = tmp_path / "run"
    args = [f"data.hr_dir={hr}", "data.crop_size=16", "data.batch_size=2", "data.num_workers=0",
            *TINY_OVERRIDES, "trainer=cpu", "trainer.max_steps=1",
            "trainer.enable_progress_bar=false", "logger=csv", f"out_dir={out}"]  # fmt: skip
    train.run(compose_cfg("train", args))
    before = _tree(out / "checkpoints")
    line = _one_line(lambda: train.run(compose_cfg("train", args)), capsys)
    assert f"out_dir '{out}' already holds a training run" in line and "ckpt_path=auto" in line
    assert _tree(out / "checkpoints") == before
    result = train.run(compose_cfg("train", [*args, "overwrite=true", "seed=1"]))
    assert Path(result["last_ckpt"]).is_file() and _tree(out / "checkpoints") != before
