"""The layout of the page and its events (handlers: :class:`zoomsr.ui.app.ZoomUI`).

Named API endpoints (``gradio_client``): ``zoom`` (the Zoom tab's Start), ``rerun``, ``batch``,
``evaluate``, ``preview``; see README.md, "Web UI".
"""

from __future__ import annotations

import gradio as gr

from zoomsr.ui import engine
from zoomsr.ui.app import KEEP_HOURS, METRICS, ZoomUI, shown_errors
from zoomsr.ui.pictures import STITCH_LAYOUTS
from zoomsr.zoom.engine import REC_TYPES

INTRO = """# zoomsr · Chain-of-Zoom
Upload an image, click on the zoom map to choose where to zoom, press **Start**. Every step runs
what `python infer.py` runs with the same settings (the command is shown with the result)."""

# Fonts of the machine: the page asks no font server for anything.
#: gradio injects a live progress tracker where a handler's default is a gr.Progress.
PROGRESS = gr.Progress()
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])


def build(ui: ZoomUI) -> gr.Blocks:
    """The Blocks app (not yet queued or launched)."""
    choices = [(c.label, c.value) for c in ui.backbones]
    keep = KEEP_HOURS * 3600
    with gr.Blocks(title="zoomsr: Chain-of-Zoom", delete_cache=(3600, keep)) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                c = settings_column(choices)
            with gr.Column(scale=5), gr.Tabs():
                with gr.Tab("Zoom", id="zoom"):
                    z = zoom_tab()
                with gr.Tab("Batch", id="batch"):
                    b = batch_tab()
                with gr.Tab("Evaluate", id="evaluate"):
                    e = evaluate_tab()
        wire(ui, c, z, b, e)
    return demo


def settings_column(choices) -> dict:
    c = {}
    c["backbone"] = gr.Dropdown(
        choices, value="bicubic", label="backbone (scale per step)", elem_id="backbone"
    )
    c["rec_type"] = gr.Dropdown(
        list(REC_TYPES), value="recursive_multiscale", label="rec type", elem_id="rec-type"
    )
    c["process_size"] = gr.Slider(
        64, 1024, value=512, step=32, label="process size", elem_id="process-size"
    )
    c["upscale"] = gr.Slider(2, 8, value=4, step=1, label="per-step upscale", elem_id="upscale")
    c["steps"] = gr.Slider(1, 6, value=4, step=1, label="steps", elem_id="steps-slider")
    c["prompt_type"] = gr.Radio(
        list(engine.PROMPT_TYPES), value="none", label="prompt type", elem_id="prompt-type"
    )
    c["user_prompt"] = gr.Textbox(
        "", label="custom prompt (joined after the generated one, CoZ style)", elem_id="user-prompt"
    )
    c["align"] = gr.Radio(list(engine.ALIGNS), value="none", label="colour fix", elem_id="align")
    c["seed"] = gr.Number(0, label="seed", precision=0, elem_id="seed")
    c["point"] = gr.Textbox(
        "", label="zoom point x, y (click the zoom map; empty = centre)", elem_id="zoom-point"
    )
    with gr.Accordion("memory, precision, layout", open=False):
        c["memory"] = gr.Radio(
            list(engine.MEMORY_MODES), value="plain", label="memory mode (swap: idle models "
            "on the CPU)", elem_id="memory",
        )  # fmt: skip
        c["precision"] = gr.Dropdown(
            list(engine.PRECISIONS), value="auto", label="precision (VLM weights)"
        )
        c["tile_size"] = gr.Number(0, label="tile size (LR px, 0 = whole)", precision=0)
        c["stitch_layout"] = gr.Radio(list(STITCH_LAYOUTS), value="row", label="stitch layout")
    with gr.Accordion("VLM prompts", open=False):
        c["vlm_model"] = gr.Textbox("Qwen/Qwen2.5-VL-3B-Instruct", label="local VLM (folder/id)")
        c["vlm_adapter"] = gr.Textbox("", label="VLM LoRA adapter folder (optional)")
        c["remote_base_url"] = gr.Textbox("http://127.0.0.1:8000/v1", label="remote VLM base URL")
        c["remote_model"] = gr.Textbox("Qwen/Qwen2.5-VL-3B-Instruct", label="remote VLM model")
        c["remote_key"] = gr.Textbox("", label="remote VLM key", type="password")
    return c


def zoom_tab() -> dict:
    z = {}
    with gr.Row():
        z["image"] = gr.Image(
            label="input image", type="filepath", image_mode=None,
            sources=["upload", "clipboard"], height=320, elem_id="input-image",
        )  # fmt: skip
        z["map"] = gr.Image(
            label="zoom map: click to choose the zoom point", interactive=False,
            height=320, elem_id="zoom-map",
        )  # fmt: skip
    examples = example_photos()
    if examples:
        gr.Examples([[p] for p in examples], inputs=[z["image"]], label="examples")
    z["regions"] = gr.Textbox(
        label="regions of the steps (x0, y0, x1, y1 of the preprocessed image)",
        lines=3, interactive=False, elem_id="regions",
    )  # fmt: skip
    with gr.Row():
        z["start"] = gr.Button("Start", variant="primary", elem_id="start")
        z["cancel"] = gr.Button("Cancel", variant="stop", elem_id="cancel")
    z["status"] = gr.Markdown(elem_id="status")
    with gr.Row():
        z["final"] = gr.Image(label="final", format="png", interactive=False, elem_id="final")
        z["download"] = gr.File(label="download: the infer.py folder (zip)", elem_id="zip")
    z["steps"] = gr.Gallery(label="steps", columns=4, format="png", elem_id="steps")
    z["table"] = gr.Dataframe(
        headers=["step", "magnification", "zoom box", "prompt"],
        datatype=["number", "str", "str", "str"], interactive=True, wrap=True,
        label="prompts (edit, then re-run the later steps)", elem_id="prompts",
    )  # fmt: skip
    z["rerun"] = gr.Button("Re-run with edited prompts", elem_id="rerun")
    z["regions_gallery"] = gr.Gallery(
        label="each step with the next region drawn", columns=4, elem_id="regions-gallery"
    )
    z["strip"] = gr.Image(label="stitched", format="png", interactive=False, elem_id="strip")
    with gr.Accordion("prompts.json", open=False):
        z["prompts"] = gr.JSON(label="prompts.json", elem_id="prompts-json")
    z["state"] = gr.State({})
    return z


def example_photos() -> list[str]:
    """A few of scikit-image's bundled photos (read from its install folder, no network)."""
    from zoomsr.data.photos import skimage_data_dir

    names = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")
    return [str(p) for p in (skimage_data_dir() / n for n in names) if p.is_file()]


def batch_tab() -> dict:
    b = {}
    gr.Markdown("Several images or a .zip: the folder `infer.py` writes, with the settings left.")
    b["files"] = gr.File(
        file_count="multiple", file_types=["image", ".zip"], label="images or zip",
        elem_id="batch-files",
    )  # fmt: skip
    b["start"] = gr.Button("Run batch", variant="primary", elem_id="batch-start")
    b["note"] = gr.Markdown(elem_id="batch-note")
    b["zip"] = gr.File(label="results (zip)", elem_id="batch-zip")
    b["table"] = gr.Dataframe(headers=["file", "in the zip"], elem_id="batch-table")
    return b


def evaluate_tab() -> dict:
    e = {}
    gr.Markdown("A protocol of `evaluate.py` on your HR images, with the backbone on the left.")
    e["files"] = gr.File(
        file_count="multiple", file_types=["image", ".zip"], label="HR images or zip",
        elem_id="eval-files",
    )  # fmt: skip
    with gr.Row():
        e["protocol"] = gr.Radio(
            ["benchmark", "zoom_full", "zoom_center"], value="benchmark", label="protocol"
        )
        e["scales"] = gr.Textbox("2, 3, 4", label="scales", elem_id="eval-scales")
        e["process_size"] = gr.Number(128, label="process size (zoom_center)", precision=0)
    e["metrics"] = gr.CheckboxGroup(METRICS, value=["psnr_y", "ssim_y"], label="metrics")
    e["start"] = gr.Button("Evaluate", variant="primary", elem_id="eval-start")
    e["table"] = gr.Dataframe(label="metrics per scale", elem_id="eval-table")
    e["plot"] = gr.Image(label="metric vs scale", format="png", interactive=False)
    e["zip"] = gr.File(label="metrics.json, metrics.md, per_image.csv, metrics.png (zip)")
    return e


def wire(ui: ZoomUI, c: dict, z: dict, b: dict, e: dict) -> None:
    from zoomsr.ui.app import ZOOM_PARAMS

    settings = [c[k] for k in ZOOM_PARAMS[1:]]
    zoom_inputs = [z["image"], *settings]
    zoom_outputs = [
        z["final"], z["steps"], z["prompts"], z["strip"], z["regions_gallery"], z["table"],
        z["download"], z["status"], z["state"],
    ]  # fmt: skip

    @shown_errors
    def zoom(
        image, backbone, rec_type, process_size, upscale, steps, prompt_type, user_prompt,
        align, seed, point, memory, precision, tile_size, stitch_layout, vlm_model,
        vlm_adapter, remote_base_url, remote_model, remote_key, progress=PROGRESS,
    ):  # fmt: skip
        args = [image, backbone, rec_type, process_size, upscale, steps, prompt_type]
        args += [user_prompt, align, seed, point, memory, precision, tile_size, stitch_layout]
        args += [vlm_model, vlm_adapter, remote_base_url, remote_model, remote_key]
        yield from ui.zoom(*args, progress=progress)

    @shown_errors
    def rerun(
        image, backbone, rec_type, process_size, upscale, steps, prompt_type, user_prompt,
        align, seed, point, memory, precision, tile_size, stitch_layout, vlm_model,
        vlm_adapter, remote_base_url, remote_model, remote_key, edited_prompts, last_run,
        progress=PROGRESS,
    ):  # fmt: skip
        args = [image, backbone, rec_type, process_size, upscale, steps, prompt_type]
        args += [user_prompt, align, seed, point, memory, precision, tile_size, stitch_layout]
        args += [vlm_model, vlm_adapter, remote_base_url, remote_model, remote_key]
        yield from ui.rerun(*args, edited_prompts, last_run, progress=progress)

    @shown_errors
    def batch(
        files, backbone, rec_type, process_size, upscale, steps, prompt_type, user_prompt,
        align, seed, point, memory, precision, tile_size, stitch_layout, vlm_model,
        vlm_adapter, remote_base_url, remote_model, remote_key,
    ):  # fmt: skip
        return ui.batch(
            files, backbone, rec_type, process_size, upscale, steps, prompt_type, user_prompt,
            align, seed, point, memory, precision, tile_size, stitch_layout, vlm_model,
            vlm_adapter, remote_base_url, remote_model, remote_key,
        )  # fmt: skip

    preview_inputs = [
        z["image"], c["backbone"], c["rec_type"], c["process_size"], c["upscale"], c["steps"],
        c["point"],
    ]  # fmt: skip
    preview = shown_errors(ui.preview)
    run = z["start"].click(
        zoom, zoom_inputs, zoom_outputs, api_name="zoom", preprocess=False,
        concurrency_id="model", concurrency_limit=1, show_progress_on=[z["steps"]],
    )  # fmt: skip
    again = z["rerun"].click(
        rerun, [*zoom_inputs, z["table"], z["state"]], zoom_outputs, api_name="rerun",
        preprocess=False, concurrency_id="model", concurrency_limit=1,
        show_progress_on=[z["steps"]],
    )  # fmt: skip
    z["cancel"].click(lambda: "cancelled", None, z["status"], cancels=[run, again], queue=False)
    for trigger in [z["image"].change, *(c[k].change for k in preview_inputs_keys())]:
        trigger(
            preview, preview_inputs, [z["map"], z["regions"]], preprocess=False,
            api_name=False if trigger != z["image"].change else "preview",
            concurrency_id="preview", concurrency_limit=4, show_progress="hidden",
        )  # fmt: skip
    z["map"].select(
        shown_errors(ui.click), [z["image"], c["process_size"]], c["point"], preprocess=False,
        api_name=False, concurrency_id="preview", concurrency_limit=4,
    )  # fmt: skip
    c["backbone"].change(
        lambda v: upscale_for(ui, v), c["backbone"], c["upscale"], api_name=False, queue=False
    )
    b["start"].click(
        batch, [b["files"], *settings], [b["zip"], b["table"], b["note"]],
        api_name="batch", preprocess=False, concurrency_id="model", concurrency_limit=1,
    )  # fmt: skip
    e["start"].click(
        shown_errors(ui.evaluate),
        [e["files"], c["backbone"], e["protocol"], e["scales"], e["metrics"], e["process_size"]],
        [e["table"], e["plot"], e["zip"]], api_name="evaluate", preprocess=False,
        concurrency_id="model", concurrency_limit=1,
    )  # fmt: skip


def preview_inputs_keys() -> list[str]:
    return ["backbone", "rec_type", "process_size", "upscale", "steps", "point"]


def upscale_for(ui: ZoomUI, value):
    """A checkpoint fixes the per-step factor; the model-free backbones take any."""
    try:
        choice = ui.choice(value)
    except Exception:
        return gr.update()
    if choice.is_ckpt and choice.scale:
        return gr.update(value=choice.scale, interactive=False)
    return gr.update(interactive=True)
