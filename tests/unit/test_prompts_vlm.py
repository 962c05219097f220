"""The local VLM source on a tiny random-initialized Qwen2.5-VL (the real class, a small config;
tokenizer, processor and chat template written offline by ``zoomsr.prompts.tiny``): CoZ's
messages with one and two views, the cache, the LoRA adapter and the errors for missing
weights."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from zoomsr.errors import ZoomSRError
from zoomsr.prompts.base import MULTI_VIEW_INSTRUCTION, SINGLE_VIEW_INSTRUCTION
from zoomsr.prompts.tiny import write_tiny_vlm
from zoomsr.prompts.vlm import VLMPrompt, qwen_view


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> Path:
    """A ~0.1M-parameter Qwen2_5_VLForConditionalGeneration, tokenizer and processor written
    offline (zoomsr.prompts.tiny): images of up to 56x56 px, 14 px patches merged 2x2."""
    return write_tiny_vlm(tmp_path_factory.mktemp("tiny_qwen"))


def views(batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """A wider 56x56 view and a 28x28 zoomed view (as recursive_multiscale gives them)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, 56, 56, generator=g), torch.rand(batch, 3, 28, 28, generator=g)]


def record_generate(source: VLMPrompt) -> list[dict]:
    """Per generation, what reached the real model: the vision tower's pixels and image grid,
    and the language model's prompt ids (hooks on the loaded modules)."""
    seen: list[dict] = []

    def vision(module, args, kwargs):
        pixels = args[0] if args else kwargs["hidden_states"]
        seen.append({"pixel_values": pixels, "image_grid_thw": kwargs["grid_thw"]})

    def language(module, args, kwargs):
        if seen and "input_ids" not in seen[-1]:  # the prefill, right after the images
            seen[-1]["input_ids"] = kwargs["input_ids"]

    source.net.model.visual.register_forward_pre_hook(vision, with_kwargs=True)
    source.net.register_forward_pre_hook(language, with_kwargs=True)
    return seen


def test_two_views_reach_the_model_with_coz_instruction(qwen):
    source = VLMPrompt(model=str(qwen), max_new_tokens=4, cache=None)
    seen = record_generate(source)
    prompts = source(views(), step=1)
    assert len(prompts) == 1 and isinstance(prompts[0], str)
    assert len(seen) == 1  # one image, one generation: the images are encoded once
    inputs = seen[0]
    # Two images: the 56x56 view is 4x4 patches of 14 px; qwen_vl_utils (CoZ) brings the 28 px
    # view up to its 3136 px minimum, 56 x 56, also 4 x 4.
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]
    assert inputs["pixel_values"].shape[0] == 16 + 16
    image_token = source.net.config.image_token_id
    assert int((inputs["input_ids"] == image_token).sum()) == (16 + 16) // 4  # 2x2 merge
    text = source.processor.decode(inputs["input_ids"][0])
    assert f"<|im_start|>system\n{MULTI_VIEW_INSTRUCTION}<|im_end|>" in text
    assert text.count("<|vision_start|>") == 2 and text.endswith("<|im_start|>assistant\n")


def test_one_view_uses_the_single_view_instruction(qwen):
    source = VLMPrompt(model=str(qwen), max_new_tokens=4, cache=None)
    seen = record_generate(source)
    source([views()[1]], step=1)
    assert seen[0]["image_grid_thw"].tolist() == [[1, 4, 4]]  # 28 px -> 56 px, as CoZ
    text = source.processor.decode(seen[0]["input_ids"][0])
    assert SINGLE_VIEW_INSTRUCTION in text and MULTI_VIEW_INSTRUCTION not in text


def test_greedy_prompt_is_the_decoded_generation_and_user_text_is_joined(qwen):
    """The prompt equals transformers' own greedy generation for the same chat, decoded; the
    user text follows CoZ's "{generated}, {user},"."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from zoomsr.prompts.base import to_pil
    from zoomsr.prompts.vlm import messages

    v = views()
    processor = AutoProcessor.from_pretrained(qwen)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen).eval()
    chat = processor.apply_chat_template(
        messages(MULTI_VIEW_INSTRUCTION, 2), tokenize=False, add_generation_prompt=True
    )
    images = [qwen_view(to_pil(v[0][0])), qwen_view(to_pil(v[1][0]))]  # as process_vision_info
    assert images[1].size == (56, 56)
    inputs = processor(text=[chat], images=images, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=6)  # CoZ: the generation config's decoding
    want = processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    want = " ".join(want.split())
    assert want  # the tiny model says something (so the join below is tested)
    plain = VLMPrompt(model=str(qwen), max_new_tokens=6, cache=None)
    assert plain(v, step=1) == [want]
    joined = VLMPrompt(model=str(qwen), max_new_tokens=6, user_text="8k, sharp", cache=None)
    assert joined(v, step=1) == [f"{want}, 8k, sharp,"]


def test_cache_second_run_calls_the_model_zero_times(qwen, tmp_path):
    cache = tmp_path / "prompts.jsonl"
    first = VLMPrompt(model=str(qwen), max_new_tokens=4, cache=str(cache))
    batch = views(batch=3)
    texts = first(batch, step=1)
    assert first.model_calls == 3
    assert first(batch, step=2) == texts and first.model_calls == 3  # same views: no call
    assert len(cache.read_text().splitlines()) == 3
    second = VLMPrompt(model=str(qwen), max_new_tokens=4, cache=str(cache))  # a new run
    assert second(batch, step=1) == texts
    assert second.model_calls == 0 and second._net is None  # the model was never loaded
    # Other settings are other keys: a longer generation is asked of the model again.
    longer = VLMPrompt(model=str(qwen), max_new_tokens=5, cache=str(cache))
    longer([b[:1] for b in batch], step=1)
    assert longer.model_calls == 1


def test_lora_adapter_is_loaded_and_changes_the_prompt(qwen, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(1)
    get_peft_model(base, lora).save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    v = [torch.rand(1, 3, 28, 28, generator=torch.Generator().manual_seed(3))]
    plain = VLMPrompt(model=str(qwen), max_new_tokens=8, cache=None)
    adapted = VLMPrompt(model=str(qwen), adapter=str(tmp_path / "adapter"), max_new_tokens=8)
    kept = VLMPrompt(
        model=str(qwen), adapter=str(tmp_path / "adapter"), merge_adapter=False, max_new_tokens=8
    )
    assert adapted(v, step=1) == kept(v, step=1) != plain(v, step=1)
    assert not any("lora" in n for n, _ in adapted.net.named_parameters())  # merged
    assert any("lora" in n for n, _ in kept.net.named_parameters())
    assert adapted.settings() != plain.settings()  # separate cache keys


def test_missing_model_and_bad_adapter_are_clear_errors(qwen, tmp_path):
    with pytest.raises(ZoomSRError, match="not in the Hugging Face cache.*hf download"):
        VLMPrompt(model="nobody/no-such-vlm")
    with pytest.raises(ZoomSRError, match="is not a folder"):
        VLMPrompt(model=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZoomSRError, match="lacks config.json"):
        VLMPrompt(model=str(tmp_path / "empty"))
    with pytest.raises(ZoomSRError, match="adapter not found.*adapter_config.json"):
        VLMPrompt(model=str(qwen), adapter=str(tmp_path / "no_adapter"))
    # An adapter for modules the VLM does not have fails when it is loaded, clearly.
    bad = tmp_path / "bad_adapter"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["no_such_proj"]})
    )
    (bad / "adapter_model.safetensors").write_bytes(b"")
    source = VLMPrompt(model=str(qwen), adapter=str(bad), cache=None)
    with pytest.raises(ZoomSRError, match="does not fit the VLM"):
        source([views()[1]], step=1)


def test_vlm_views_are_resized_as_qwen_vl_utils_does():
    from zoomsr.prompts.vlm import qwen_size

    assert qwen_size(512, 512) == (504, 504)  # 18 x 18 merged tokens = 324 (CoZ at P = 512)
    assert qwen_size(128, 128) == (140, 140)  # round(128 / 28) = 5 -> 140
    assert qwen_size(28, 28) == (56, 56)  # below 4 * 28 * 28 px: scaled up, sides ceiled
    assert qwen_size(510, 1020, max_pixels=28 * 28 * 100) == (196, 392)  # floored below max
    params = inspect.signature(VLMPrompt).parameters  # CoZ's script: 128 tokens, model's decoding
    assert params["max_new_tokens"].default == 128 and params["do_sample"].default is None
