"""The web UI as a user reaches it: the real server (``python -m zoomsr.ui``) on a free
127.0.0.1 port, driven through ``gradio_client`` (the ``zoom`` endpoint) and, in
``test_ui_browser.py``, through headless Chromium. Every zoom is checked against ``infer.py``
run with the same settings."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch

from zoomsr.data.io import load_image, save_image
from zoomsr.tasks import infer

from .test_infer_zoom import sr3_ckpt  # noqa: F401  (fixtures)
from .test_train import photos  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("gradio_client")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m zoomsr.ui`` in a subprocess; stopped (and its log kept) at the end."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = tmp / "server.log"
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "GRADIO_TEMP_DIR": str(tmp / "gradio"),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "ZOOMSR_ROOT": str(tmp),  # the prompt cache (data/) lands here, not in the repo
        }
        cmd = [sys.executable, "-m", "zoomsr.ui", "--port", str(self.port)]
        cmd += ["--runs", str(tmp / "no_runs"), "--device", "cpu", *args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the UI server exited:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the UI server did not answer in 120 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory, sr3_ckpt):  # noqa: F811
    tmp = tmp_path_factory.mktemp("ui")
    srv = Server(tmp, "--ckpt", str(sr3_ckpt))
    yield srv
    srv.stop()
    assert srv.proc.returncode is not None


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A real photo, not square, so preprocessing resizes and crops."""
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "coffee.png"
    img = torch.from_numpy(data.coffee()[40:220, 100:340].copy()).permute(2, 0, 1) / 255.0
    save_image(img, path)
    return path


def zoom(client, image: Path, **kw):
    """The ``zoom`` endpoint by keyword (the README's table)."""
    from gradio_client import handle_file

    return client.predict(image=handle_file(str(image)), api_name="/zoom", **kw)


def test_zoom_endpoint_bicubic_equals_infer(client, compose_cfg, photo, tmp_path):
    settings = dict(
        backbone="bicubic", rec_type="recursive_multiscale", process_size=64, upscale=2,
        steps=3, point="0.3, 0.7", align="wavelet", user_prompt="a cup of coffee", seed=3,
    )  # fmt: skip
    out = zoom(client, photo, **settings)
    final, steps, prompts, _strip, _regions, _table, zip_path, status = out
    assert len(steps) == 4
    for item in steps:  # every step is the process-size square, as infer.py writes it
        assert load_image(item["image"]).shape == (3, 64, 64)
    assert [s["magnification"] for s in prompts["steps"]] == [1, 2, 4, 8]
    assert [s["prompts"] for s in prompts["steps"][1:]] == [["a cup of coffee"]] * 3
    assert "final 64x64 px, x8" in status
    cfg = compose_cfg(
        "infer",
        [
            f"input={photo}", f"out_dir={tmp_path / 'cli'}", "backbone=bicubic", "scale=2",
            "zoom.rec_type=recursive_multiscale", "zoom.process_size=64", "zoom.upscale=2",
            "zoom.steps=3", "zoom.point=[0.3,0.7]", "zoom.align=wavelet", "seed=3",
            "prompt=manual", "prompt.user_text='a cup of coffee'",
        ],
    )  # fmt: skip
    infer.run(cfg)
    folder = tmp_path / "cli" / "coffee"
    assert torch.equal(load_image(final), load_image(folder / "step3_output.png"))
    for k, item in enumerate(steps[1:], start=1):
        assert torch.equal(load_image(item["image"]), load_image(folder / f"step{k}_output.png"))
    with zipfile.ZipFile(zip_path) as zf:  # the download is infer.py's folder
        names = {Path(n).name for n in zf.namelist() if not n.endswith("/")}
        assert names == {p.name for p in folder.iterdir()}
        ui_prompts = zf.read("coffee/prompts.json")
    assert ui_prompts == (folder / "prompts.json").read_bytes()


def test_zoom_endpoint_trained_sr3_equals_infer(
    client,
    server,
    compose_cfg,
    sr3_ckpt,  # noqa: F811
    photo,
    tmp_path,
):
    settings = dict(backbone=str(sr3_ckpt), process_size=32, steps=2, memory="swap", seed=1)
    final, steps, prompts, *_ = zoom(client, photo, rec_type="recursive", **settings)
    again = zoom(client, photo, rec_type="recursive", **settings)
    assert torch.equal(load_image(again[0]), load_image(final))  # same seed, same pixels
    loads = [ln for ln in server.log.read_text().splitlines() if "loaded backbone" in ln]
    assert sum(str(sr3_ckpt) in ln for ln in loads) == 1, loads  # loaded once, kept
    assert [load_image(s["image"]).shape for s in steps] == [(3, 32, 32)] * 3
    assert [s["magnification"] for s in prompts["steps"]] == [1, 4, 16]  # the ckpt's x4
    assert prompts["steps"][1]["box"] == [0.375, 0.375, 0.625, 0.625]
    cfg = compose_cfg(
        "infer",
        [
            f"input={photo}", f"out_dir={tmp_path / 'cli'}", f"ckpt={sr3_ckpt}", "device=cpu",
            "zoom.rec_type=recursive", "zoom.process_size=32", "zoom.steps=2",
            "zoom.memory=swap", "seed=1", "prompt=none",
        ],
    )  # fmt: skip
    infer.run(cfg)
    out = load_image(final)
    assert out.std() > 0
    assert torch.equal(out, load_image(tmp_path / "cli" / "coffee" / "step2_output.png"))


def test_errors_are_messages_and_the_server_keeps_serving(client, server, photo, tmp_path):
    from gradio_client.exceptions import AppError

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cases = [
        (bad, {}, "cannot read image"),
        (photo, {"backbone": "/nowhere/last.ckpt"}, "not offered here"),
        (photo, {"prompt_type": "vlm", "vlm_model": str(tmp_path / "no_vlm")}, "no_vlm"),
        (
            photo,
            {"prompt_type": "remote_vlm", "remote_base_url": f"http://127.0.0.1:{dead}/v1"},
            f"127.0.0.1:{dead}",
        ),
        (photo, {"point": "2, 0.5"}, "zoom point"),
        (photo, {"process_size": 10}, "process size"),
    ]
    for image, kw, message in cases:
        with pytest.raises(AppError, match=message):
            zoom(client, image, process_size=kw.pop("process_size", 64), steps=1, **kw)
    final, steps, *_ = zoom(client, photo, process_size=64, steps=1, upscale=4)
    # after a x2 bicubic run (first test), the cached x4 one: 16 px -> 64 px
    assert load_image(final).shape == (3, 64, 64)
    assert server.proc.poll() is None


def test_rerun_with_an_edited_prompt_keeps_earlier_steps(client, photo):
    settings = dict(process_size=64, upscale=2, steps=3, user_prompt="a cup")
    first = zoom(client, photo, **settings)
    rows = first[5]["data"]
    assert [r[3] for r in rows] == ["a cup"] * 3
    rows[1][3] = "latte art"  # step 2 edited in the table
    from gradio_client import handle_file

    again = client.predict(
        image=handle_file(str(photo)), edited_prompts={"headers": first[5]["headers"],
        "data": rows}, api_name="/rerun", **settings,
    )  # fmt: skip
    # steps 1-2 take the table's text, step 3 asks the source again
    assert [s["prompts"] for s in again[2]["steps"][1:]] == [["a cup"], ["latte art"], ["a cup"]]
    assert torch.equal(load_image(again[1][1]["image"]), load_image(first[1][1]["image"]))


@pytest.mark.slow
def test_zoom_with_a_local_vlm(client, photo, tmp_path):
    from zoomsr.prompts.tiny import write_tiny_vlm

    vlm = write_tiny_vlm(tmp_path / "tiny_vlm")
    kw = dict(process_size=64, steps=2, prompt_type="vlm", vlm_model=str(vlm), user_prompt="hq")
    first = zoom(client, photo, rec_type="recursive_multiscale", **kw)
    prompts = [s["prompts"][0] for s in first[2]["steps"][1:]]
    assert all(p.endswith(", hq,") and len(p) > 5 for p in prompts)  # "{generated}, {user},"
    second = zoom(client, photo, rec_type="recursive_multiscale", **kw)  # model kept, cached
    assert [s["prompts"][0] for s in second[2]["steps"][1:]] == prompts


@pytest.mark.slow
def test_tiny_sd3_lora_prompts_reach_the_model(compose_cfg, photo, tmp_path):
    """The text-conditioned backbone: the UI equals infer.py, and an edited step-2 prompt
    changes step 2 on and leaves step 1 as it was."""
    from gradio_client import Client, handle_file

    cfg = compose_cfg(
        "train",
        [
            "experiment=coz_lora", "debug=tiny", "trainer.max_steps=1", "logger=csv",
            "trainer.enable_progress_bar=false", f"data.root={tmp_path / 'photos'}",
            f"out_dir={tmp_path / 'run'}",
        ],
    )  # fmt: skip
    from zoomsr.tasks import train

    ckpt = train.run(cfg)["last_ckpt"]
    srv = Server(tmp_path, "--ckpt", ckpt)
    try:
        client = Client(srv.url, verbose=False)
        settings = dict(
            backbone=ckpt, rec_type="recursive", process_size=64, steps=2, user_prompt="a cup"
        )
        first = zoom(client, photo, **settings)
        infer.run(
            compose_cfg(
                "infer",
                [
                    f"input={photo}",
                    f"out_dir={tmp_path / 'cli'}",
                    f"ckpt={ckpt}",
                    "device=cpu",
                    "zoom.rec_type=recursive",
                    "zoom.process_size=64",
                    "zoom.steps=2",
                    "prompt=manual",
                    "prompt.user_text='a cup'",
                ],
            )  # fmt: skip
        )
        assert torch.equal(
            load_image(first[0]), load_image(tmp_path / "cli" / "coffee" / "step2_output.png")
        )
        rows = first[5]["data"]
        rows[1][3] = "a field of sunflowers"
        again = client.predict(
            image=handle_file(str(photo)), edited_prompts={"headers": first[5]["headers"],
            "data": rows}, api_name="/rerun", **settings,
        )  # fmt: skip
        step = (
            [load_image(s["image"]) for s in first[1]],
            [load_image(s["image"]) for s in again[1]],
        )
        assert torch.equal(step[0][1], step[1][1])  # step 1: same prompt, same pixels
        assert not torch.equal(step[0][2], step[1][2])  # step 2: the new prompt
    finally:
        srv.stop()


@pytest.mark.parametrize("rec_type", ["recursive_multiscale", "onestep", "nearest", "bicubic"])
def test_zoom_map_regions_are_the_run_boxes(rec_type, photo, tmp_path):
    """The regions drawn before a run (no model) are the boxes the run then reports."""
    from zoomsr.ui import engine

    models = engine.ModelCache()
    bicubic = engine.list_backbones(runs_dir=None)[0]
    for size, u, steps, point in [(100, 3, 3, (0.2, 0.8)), (90, 4, 3, (0.9, 0.1))]:
        s = engine.ZoomSettings(bicubic, rec_type, size, u, steps, point=point, device="cpu")
        *_, run = engine.iter_zoom(s, photo, tmp_path / f"{size}", models)
        preview = engine.preview_steps(s, load_image(photo))
        assert [p.box for p in preview] == [r.box for r in run.steps]


def test_out_of_memory_is_a_message_naming_what_to_lower():
    import gradio as gr

    from zoomsr.ui.app import in_page_terms, shown_errors

    @shown_errors
    def allocate():
        return torch.empty(1 << 50, dtype=torch.uint8)  # 1 PiB: a real allocation failure

    with pytest.raises(gr.Error, match="out of memory: lower 'process size'"):
        allocate()
    message = "use fewer zoom.steps or a larger zoom.process_size; set prompt.base_url=<url>"
    assert in_page_terms(message) == (
        "use fewer 'steps' or a larger 'process size'; set 'remote VLM base URL' to <url>"
    )


def test_batch_zip_writes_the_infer_folder(client, photo, tmp_path):
    from gradio_client import handle_file

    archive = tmp_path / "in.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(photo, "sub/a.png")
        zf.write(photo, "b.png")
        zf.writestr("../evil.txt", "ignored")
    result, _table, note = client.predict(
        files=[handle_file(str(archive))], backbone="nearest", rec_type="nearest",
        process_size=64, upscale=2, steps=2, api_name="/batch",
    )  # fmt: skip
    assert "2 image(s) done" in note
    with zipfile.ZipFile(result) as zf:
        names = set(zf.namelist())
        strip = zf.read("a/strip.png")
    assert {"a/step2_output.png", "b/prompts.json", "b/overview.png"} <= names
    assert not any("evil" in n for n in names)
    from PIL import Image

    assert Image.open(io.BytesIO(strip)).size == (64 * 3 + 2 * 4, 64)


def test_evaluate_tab_benchmark_table_and_plot(client, photo):
    from gradio_client import handle_file

    table, plot, archive = client.predict(
        files=[handle_file(str(photo))], backbone="bicubic", protocol="benchmark",
        scales="2, 4", metrics=["psnr_y"], api_name="/evaluate",
    )  # fmt: skip
    assert table["headers"][:2] == ["scale", "psnr_y"]
    rows = {r[0]: r for r in table["data"]}
    assert set(rows) == {"x2", "x4"} and rows["x2"][1] > rows["x4"][1] > 20
    assert load_image(plot).shape[0] == 3
    with zipfile.ZipFile(archive) as zf:
        assert {"metrics.json", "metrics.md", "metrics.png"} <= set(zf.namelist())


# ---------------------------------------------------------------------------------------------
# headless Chromium (Debian's chromium + chromium-driver through selenium; `make install` /
# `make test` install them with apt where missing). ZOOMSR_UI_SCREENSHOT=docs/ui.png also writes
# the README's picture.

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(
            "headless Chromium not installed: `make install` puts Debian's chromium and "
            "chromium-driver in with apt (needs apt-get as root); no browser is downloaded"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,2000")
    # an explicit driver: selenium-manager (which may download one) is never asked
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(what, condition, timeout: float = 60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = condition()
        except Exception:  # the element is being re-rendered
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def set_number(driver, elem_id: str, value: int) -> None:
    """Type into a slider's number box and leave it (gradio commits on blur)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def first_region(text: str) -> list[float]:
    """``step 1 (x4): x0, y0, x1, y1`` -> the four numbers."""
    return [float(v) for v in text.splitlines()[0].split(": ")[1].split(",")]


def test_zoom_in_headless_chromium(browser, server, photo, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    d, find = browser, browser.find_element
    d.get(server.url)
    wait_for("the page", lambda: find(By.ID, "start").is_displayed())
    set_number(d, "process-size", 128)
    set_number(d, "steps-slider", 2)
    find(By.CSS_SELECTOR, "#user-prompt textarea").send_keys("a cup of coffee")
    find(By.CSS_SELECTOR, "#input-image input[type=file]").send_keys(str(photo))
    regions = find(By.CSS_SELECTOR, "#regions textarea")
    before = wait_for("the zoom map's regions", lambda: regions.get_attribute("value"))
    assert first_region(before) == [0.375, 0.375, 0.625, 0.625]  # the centre, x4

    find(By.ID, "start").click()
    status = find(By.ID, "status")
    wait_for("the run to finish", lambda: "final 128x128" in status.text)
    wait_for("the gallery", lambda: len(d.find_elements(By.CSS_SELECTOR, "#steps img")) >= 3)
    assert "final 128x128 px, x16" in status.text
    table = find(By.ID, "prompts").text
    for cell in ("x4", "x16", "0.3750, 0.3750, 0.6250, 0.6250", "a cup of coffee"):
        assert cell in table, (cell, table)

    # a click on the upper left of the zoom map moves the point and every region there
    img = wait_for("the zoom map", lambda: find(By.CSS_SELECTOR, "#zoom-map img"))
    w, h = img.size["width"], img.size["height"]
    ActionChains(d).move_to_element_with_offset(img, -w // 4, -h // 4).click().perform()
    point = find(By.CSS_SELECTOR, "#zoom-point textarea")
    text = wait_for("the zoom point", lambda: point.get_attribute("value"))
    x, y = (float(v) for v in text.split(","))
    assert 0.15 < x < 0.35 and 0.15 < y < 0.35, text
    after = wait_for(
        "the regions to move", lambda: (v := regions.get_attribute("value")) != before and v
    )
    x0, y0, x1, y1 = first_region(after)
    assert x1 - x0 == pytest.approx(0.25) and x0 < 0.375 and y0 < 0.375

    # the next run zooms where the map says: its table has the map's regions
    find(By.ID, "start").click()
    wait_for("the run at the clicked point", lambda: f"zoom.point=[{x:.4f}" in status.text)
    box = after.splitlines()[0].split(": ")[1]
    assert box in find(By.ID, "prompts").text
    wait_for("the gallery", lambda: len(d.find_elements(By.CSS_SELECTOR, "#steps img")) >= 3)
    d.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "ui.png"
    d.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("ZOOMSR_UI_SCREENSHOT"):  # half size, 256 colours: README-sized
        from PIL import Image

        img = Image.open(shot).convert("RGB")
        img = img.resize((img.width // 2, img.height // 2), Image.LANCZOS)
        img.quantize(256).save(os.environ["ZOOMSR_UI_SCREENSHOT"], optimize=True)
