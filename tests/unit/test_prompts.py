"""Prompt-source basics: CoZ's prompt join, the null and manual sources, per-image user text,
the view-content cache keys and the JSONL cache file."""

from __future__ import annotations

import json

import pytest
import torch

from zoomsr.data.io import quantize
from zoomsr.errors import ZoomSRError
from zoomsr.prompts.base import PromptSource, combine_prompt
from zoomsr.prompts.cache import PromptCache, view_key
from zoomsr.prompts.manual import ManualPrompt
from zoomsr.prompts.null import NullPrompt


def batch(n: int = 2, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_combine_follows_coz():
    assert combine_prompt("cat, fur", "high quality") == "cat, fur, high quality,"
    assert combine_prompt("cat, fur", None) == "cat, fur"
    assert combine_prompt("", "high quality") == "high quality"
    assert combine_prompt("  ", "") == ""


def test_null_gives_one_empty_prompt_per_image():
    assert NullPrompt()([batch(3)], step=1) == ["", "", ""]
    assert NullPrompt()([batch(2, 16), batch(2, 4)], step=2) == ["", ""]


def test_manual_text_and_per_image_file(tmp_path):
    assert ManualPrompt("a leaf")([batch(2)]) == ["a leaf", "a leaf"]
    mapping = tmp_path / "prompts.json"
    mapping.write_text(json.dumps({"im0.png": "a red car", "im1": "a dog"}))
    source = ManualPrompt(user_text="a photo", user_file=str(mapping))
    assert source([batch(3)], names=["im0", "im1", "other"]) == ["a red car", "a dog", "a photo"]
    assert source([batch(1)], step=2, names=["im1"]) == ["a dog"]  # as the zoom engine asks
    assert source([batch(1)]) == ["a photo"]  # no name: the fixed text
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "im0.txt").write_text("bricks\n")
    assert ManualPrompt(user_file=str(folder))([batch(2)], names=["im0", "x"]) == ["bricks", ""]


def test_bad_views_and_prompt_files_are_clear_errors(tmp_path):
    with pytest.raises(ZoomSRError, match=r"1 or 2 views"):
        NullPrompt()([batch(1)] * 3)
    with pytest.raises(ZoomSRError, match=r"\(B, 3, h, w\) with one B"):
        ManualPrompt("x")([batch(1), batch(2)])
    with pytest.raises(ZoomSRError, match="prompt file not found"):
        ManualPrompt(user_file=str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ZoomSRError, match="one JSON object"):
        ManualPrompt(user_file=str(tmp_path / "bad.json"))


def test_view_key_is_the_8bit_pixels_the_views_and_the_settings():
    v = quantize(batch(1)[0])  # on the 8-bit levels
    key = view_key({"model": "a"}, [v])
    # Below half an 8-bit level the pixels an image file would hold are the same: same key.
    assert view_key({"model": "a"}, [v + 0.4 / 255]) == key
    changed = v.clone()
    changed[0, 0, 0] += 1 / 255 if changed[0, 0, 0] < 1 else -1 / 255
    assert view_key({"model": "a"}, [changed]) != key  # one level of one pixel
    assert view_key({"model": "b"}, [v]) != key
    assert view_key({"model": "a"}, [v, v]) != key  # two views are another question
    assert view_key({"model": "a"}, [v.reshape(3, 4, 16)]) != key  # same bytes, other shape


def test_cache_file_round_trip_and_torn_line(tmp_path):
    path = tmp_path / "sub" / "cache.jsonl"
    cache = PromptCache(path)
    cache.put("k1", "a cat", "VLMPrompt")
    cache.put("k2", "ein Hund, ü", "VLMPrompt")
    with path.open("a") as f:
        f.write('{"key": "k3", "prom')  # a writer killed mid-line
    again = PromptCache(path)
    assert len(again) == 2 and again.get("k2") == "ein Hund, ü" and again.get("k3") is None
    with pytest.raises(ZoomSRError, match="is a folder"):
        PromptCache(tmp_path)


class Counting(PromptSource):
    """A model-backed source whose "model" is the mean brightness: counts what reaches it."""

    uses_model = True

    def describe(self, views, step):
        return [f"brightness {float(v.mean()):.3f}" for v in views[-1]]


def test_only_uncached_images_reach_the_model(tmp_path):
    source = Counting(cache=str(tmp_path / "c.jsonl"))
    first = source([batch(2, seed=0)])
    assert source.model_calls == 2
    mixed = torch.cat([batch(2, seed=0)[1:], batch(1, seed=5)])  # one known, one new
    out = source([mixed])
    assert source.model_calls == 3 and out[0] == first[1]
    assert Counting(cache=None).uses_model and Counting(cache=None).cache is None


def test_a_source_stays_in_eval_mode_inside_a_training_module():
    outer = torch.nn.ModuleDict({"prompts": Counting(cache=None)})
    outer.train()
    assert outer.training and not outer["prompts"].training
