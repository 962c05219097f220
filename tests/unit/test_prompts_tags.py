"""Tag prompts from a tiny random-initialized ViTForImageClassification (the real class, a
small config, saved and loaded by path), its labels set so the answer is known."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zoomsr.errors import ZoomSRError
from zoomsr.prompts.tags import TagPrompt, clean_label

LABELS = {0: "cat", 1: "dog, doggy", 2: "golden_retriever", 3: "tree"}
BIAS = [0.0, 3.0, 2.0, 1.0]  # softmax: dog .644, golden retriever .237, tree .087, cat .032


def tiny_vit(folder: Path) -> Path:
    """A 1-layer ViT classifier on 32x32 images whose scores are its bias (zero weights)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=32,
        patch_size=16,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    model = ViTForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(BIAS))
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> Path:
    return tiny_vit(tmp_path_factory.mktemp("tiny_vit"))


def views(n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(n, 3, 48, 48, generator=g), torch.rand(n, 3, 12, 12, generator=g)]


def test_clean_label():
    assert clean_label("tabby, tabby cat") == "tabby"
    assert clean_label("golden_retriever") == "golden retriever"


def test_top_k_labels_become_a_comma_separated_prompt(vit):
    assert (
        TagPrompt(model=str(vit), top_k=3)(views(), step=1) == ["dog, golden retriever, tree"] * 2
    )
    assert TagPrompt(model=str(vit), top_k=9, min_score=0.1)(views(1)) == ["dog, golden retriever"]
    joined = TagPrompt(model=str(vit), top_k=2, user_text="photo")
    assert joined(views(1)) == ["dog, golden retriever, photo,"]


def test_the_tagger_sees_the_zoomed_view_only(vit):
    source = TagPrompt(model=str(vit))
    seen = []
    source.net.vit.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    source(views(2), step=1)
    assert seen == [torch.Size([2, 3, 32, 32])]  # one batch: the 2 zoomed views, resized


def test_cache_second_run_calls_the_tagger_zero_times(vit, tmp_path):
    cache = str(tmp_path / "tags.jsonl")
    first = TagPrompt(model=str(vit), cache=cache)
    texts = first(views(3))
    again = TagPrompt(model=str(vit), cache=cache)
    assert again(views(3)) == texts
    assert (first.model_calls, again.model_calls) == (3, 0) and again._net is None


def test_missing_weights_are_clear_errors(tmp_path):
    with pytest.raises(ZoomSRError, match="image tagger weights 'nobody/tagger' are not in"):
        TagPrompt(model="nobody/tagger")
    with pytest.raises(ZoomSRError, match="ram_path: file not found"):
        TagPrompt(ram_path=str(tmp_path / "ram_swin_large_14m.pth"))
    with pytest.raises(ZoomSRError, match="dape_path needs prompt.ram_path"):
        TagPrompt(dape_path=str(tmp_path / "DAPE.pth"))


def test_ram_without_its_package_is_a_clear_error(tmp_path, monkeypatch):
    weights = tmp_path / "ram_swin_large_14m.pth"
    weights.write_bytes(b"\0")
    monkeypatch.setitem(__import__("sys").modules, "ram", None)  # not installed here either way
    source = TagPrompt(ram_path=str(weights))
    with pytest.raises(ZoomSRError, match="need the `ram` package"):
        source(views(1))
