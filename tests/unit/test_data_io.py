"""Image loading of every common mode, and the datasets over folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zoomsr.data.datamodule import SRDataModule
from zoomsr.data.datasets import (
    BenchmarkDataset,
    HRFolderDataset,
    PairedFolderDataset,
    modcrop,
)
from zoomsr.data.io import load_image, save_image
from zoomsr.errors import ZoomSRError


def test_gray_image_kept_or_repeated(tmp_path):
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(arr, mode="L").save(tmp_path / "g.png")
    gray = load_image(tmp_path / "g.png", keep_gray=True)
    rgb = load_image(tmp_path / "g.png")
    assert gray.shape == (1, 8, 8) and rgb.shape == (3, 8, 8)
    assert torch.allclose(gray[0] * 255, torch.from_numpy(arr).float())
    assert torch.equal(rgb[0], rgb[2])


def test_rgba_is_composited_over_white(tmp_path):
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0] = 255  # red
    arr[:2, ..., 3] = 255  # top half opaque, bottom half transparent
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (3, 4, 4)
    assert torch.allclose(img[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(img[:, 3, 0], torch.ones(3))


def test_palette_image(tmp_path):
    Image.new("RGB", (6, 5), (10, 200, 30)).convert("P", palette=Image.ADAPTIVE).save(
        tmp_path / "p.png"
    )
    img = load_image(tmp_path / "p.png")
    assert img.shape == (3, 5, 6)
    assert torch.allclose(img[:, 2, 2] * 255, torch.tensor([10.0, 200.0, 30.0]), atol=1)


def test_16bit_image_keeps_precision(tmp_path):
    arr = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000 + 7).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    img = load_image(tmp_path / "d.png", keep_gray=True)
    assert img.shape == (1, 4, 4)
    assert torch.allclose(img[0].double(), torch.from_numpy(arr / 65535.0), atol=1e-6)


def test_save_load_roundtrip_is_8bit_exact(tmp_path):
    img = torch.rand(3, 9, 7, generator=torch.Generator().manual_seed(0))
    save_image(img, tmp_path / "x.png")
    back = load_image(tmp_path / "x.png")
    assert torch.allclose(back, (img * 255).round() / 255, atol=1e-6)


def test_modcrop():
    assert modcrop(torch.zeros(3, 13, 10), 4).shape == (3, 12, 8)


@pytest.fixture
def photo_dir(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(70, 64), (64, 80), (96, 66)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_hr_folder_crops_are_seeded(photo_dir):
    ds = HRFolderDataset(photo_dir, scale=4, crop_size=32, repeat=2)
    assert len(ds) == 6
    torch.manual_seed(3)
    a = ds[1]
    torch.manual_seed(3)
    b = ds[1]
    assert a["hr"].shape == (3, 32, 32) and a["lr"].shape == (3, 8, 8)
    assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])


def test_hr_folder_rejects_bad_crop(photo_dir):
    with pytest.raises(ZoomSRError, match="multiple of scale"):
        HRFolderDataset(photo_dir, scale=4, crop_size=30)


def test_benchmark_dataset_modcrops_and_keeps_gray(tmp_path):
    (tmp_path / "hr").mkdir()
    Image.new("L", (50, 37), 128).save(tmp_path / "hr" / "g.png")
    item = BenchmarkDataset(tmp_path / "hr", scale=3)[0]
    assert item["hr"].shape == (1, 36, 48) and item["lr"].shape == (1, 12, 16)


def test_paired_folder_aligns_crops(tmp_path):
    hr = torch.rand(3, 64, 64)
    lr = torch.nn.functional.avg_pool2d(hr[None], 4)[0]
    for d in ("hr", "lr"):
        (tmp_path / d).mkdir()
    save_image(hr, tmp_path / "hr" / "a.png")
    save_image(lr, tmp_path / "lr" / "a.png")
    torch.manual_seed(0)
    item = PairedFolderDataset(tmp_path / "hr", tmp_path / "lr", 4, crop_size=32)[0]
    assert item["hr"].shape == (3, 32, 32) and item["lr"].shape == (3, 8, 8)
    pooled = torch.nn.functional.avg_pool2d(item["hr"][None], 4)[0]
    assert (pooled - item["lr"]).abs().max() < 2.5 / 255  # the LR crop sits under the HR crop


def test_datamodule_batches(photo_dir):
    dm = SRDataModule(
        hr_dir=str(photo_dir),
        val_hr_dir=str(photo_dir),
        scale=2,
        crop_size=16,
        batch_size=2,
        num_workers=0,
        val_crop_size=32,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape == (2, 3, 16, 16) and batch["lr"].shape == (2, 3, 8, 8)
    val = next(iter(dm.val_dataloader()))
    assert val["hr"].shape == (1, 3, 32, 32) and val["lr"].shape == (1, 3, 16, 16)


def test_datamodule_requires_hr_dir():
    with pytest.raises(ZoomSRError, match=r"data.hr_dir is not set"):
        SRDataModule(num_workers=0).setup("fit")
