"""FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule", eq. 6) through
torch-fidelity: its TF-Inception port gives the 2048-d pool features (the features torchmetrics'
FID uses too), its ``fid_features_to_statistics`` / ``fid_statistics_to_metric`` the distance

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)),

in float64 from the two sets' feature means and covariances.

``metrics.fid=pyiqa`` (OSEDiff's ``test_metrics.py``: ``pyiqa.create_metric('fid')``) computes it
as pyiqa's clean-fid port does instead (Parmar et al. 2022, "On Aliased Resizing and Surprising
Subtleties in GAN Evaluation"): 8-bit images, each channel resized to 299x299 by PIL's bicubic
in float ("clean" mode), mapped to [-1, 1], pytorch-fid's port of the same TF-Inception, and the
distance by pyiqa's ``frechet_distance`` on NumPy's mean and covariance.

FID is a set metric: evaluation extracts features per image (batched, on the device), stores
them, and computes the distance once per scale at the end, so a resumed run gets the same value.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zoomsr.data.io import to_uint8
from zoomsr.errors import ZoomSRError
from zoomsr.metrics.weights import check_weights, weight_path


class InceptionFeatures(nn.Module):
    """torch-fidelity's ``FeatureExtractorInceptionV3`` (``2048`` pool features).

    Images in [0, 1] are rounded to 8 bits (torch-fidelity reads 8-bit images) and resized to
    299x299 inside the extractor, with TF1's bilinear resize as the original FID code does.

    Args:
        weights: the converted TF-Inception state dict; None (default) reads it from
            ``$TORCH_HOME/hub/checkpoints`` (see :mod:`zoomsr.metrics.weights`).
    """

    def __init__(self, weights: str | None = None) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        if weights is None:
            check_weights(["fid"])
            weights = str(weight_path("fid"))
        try:  # the library unpickles; make sure first that the file holds tensors only
            torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ZoomSRError(f"'{weights}' is not a plain Inception state dict: {err}") from err
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], weights)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] (C = 1 or 3) -> ``(B, 2048)``."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        device = next(self.net.parameters()).device
        (features,) = self.net(to_uint8(images.to(device)))
        return features


class CleanInceptionFeatures(nn.Module):
    """pyiqa's ``InceptionV3`` (2048 pool features) fed as its ``clean`` mode feeds it.

    Args:
        pretrained: read pyiqa's ``pt_inception-2015-12-05-6726825d.pth`` from
            ``$TORCH_HOME/hub/pyiqa`` (``weights_only``); False keeps the network random (tests).
    """

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        if pretrained:
            check_weights(["fid_pyiqa"])
        import pyiqa.archs.inception as inception

        def load(net: nn.Module, _url: str) -> None:  # instead of pyiqa's downloader
            if pretrained:
                path = weight_path("fid_pyiqa")
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                except Exception as err:
                    raise ZoomSRError(f"cannot read '{path}' as a state dict: {err}") from err
                net.load_state_dict(state)

        original = inception.load_pretrained_network
        inception.load_pretrained_network = load
        try:
            self.net = inception.InceptionV3(output_blocks=[3]).eval()
        finally:
            inception.load_pretrained_network = original

    @staticmethod
    def clean_resize(images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> ``(B, 3, 299, 299)`` float on [0, 255]: 8-bit, then each
        channel resized as a float PIL image with bicubic (clean-fid's ``clean`` mode)."""
        from PIL import Image

        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        out = []
        for img in to_uint8(images).cpu().numpy():  # (3, H, W) uint8
            chans = [
                np.asarray(
                    Image.fromarray(c.astype(np.float32), mode="F").resize(
                        (299, 299), resample=Image.BICUBIC
                    )
                ).clip(0, 255)
                for c in img
            ]
            out.append(np.stack(chans).astype(np.float32))
        return torch.from_numpy(np.stack(out))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> ``(B, 2048)``."""
        device = next(self.net.parameters()).device
        batch = (self.clean_resize(images).to(device) - 128) / 128
        (features,) = self.net(batch, False, False)
        return features.reshape(features.shape[0], -1)


class FID(nn.Module):
    """Features of image batches and the Fréchet distance between two feature sets.

    Args:
        extractor: ``(B, 3, H, W)`` in [0, 1] -> ``(B, D)``; default :class:`InceptionFeatures`
            (``impl="torch_fidelity"``) or :class:`CleanInceptionFeatures` (``impl="pyiqa"``).
            Tests inject a tiny network to check the distance against closed forms.
        impl: ``torch_fidelity`` (default) or ``pyiqa``: whose features and distance.
    """

    kind = "set"

    def __init__(self, extractor: nn.Module | None = None, impl: str = "torch_fidelity") -> None:
        super().__init__()
        if impl not in ("torch_fidelity", "pyiqa"):
            raise ZoomSRError(f"metrics.fid={impl!r}: choose torch_fidelity or pyiqa.")
        self.impl = impl
        if extractor is None:
            pyiqa = impl == "pyiqa"
            extractor = CleanInceptionFeatures() if pyiqa else InceptionFeatures()
        self.extractor = extractor

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> ``(B, D)`` float64 on the CPU."""
        return self.extractor(images).reshape(images.shape[0], -1).double().cpu()

    def set_distance(self, features_a, features_b) -> float:
        """FID between two ``(N, D)`` feature sets with this metric's implementation."""
        if self.impl == "pyiqa":
            return pyiqa_distance(features_a, features_b)
        return self.distance(features_a, features_b)

    @staticmethod
    def distance(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray):
        """FID between two ``(N, D)`` feature sets (N >= 2 each), as torch-fidelity computes it."""
        from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

        a = torch.as_tensor(np.asarray(features_a), dtype=torch.float64)
        b = torch.as_tensor(np.asarray(features_b), dtype=torch.float64)
        if a.shape[0] < 2 or b.shape[0] < 2:
            return float("nan")  # a covariance needs two samples
        stats_a, stats_b = fid_features_to_statistics(a), fid_features_to_statistics(b)
        fid = fid_statistics_to_metric(stats_a, stats_b, verbose=False)
        return float(fid["frechet_inception_distance"])


def pyiqa_distance(features_a, features_b) -> float:
    """FID as pyiqa's ``FID.forward`` finishes it: NumPy mean and covariance (``rowvar=False``)
    of each set, then pyiqa's ``frechet_distance`` (scipy ``sqrtm``, 1e-6 on the diagonal if the
    product is singular)."""
    from pyiqa.archs.fid_arch import frechet_distance

    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    if a.shape[0] < 2 or b.shape[0] < 2:
        return float("nan")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    return float(frechet_distance(mu_a, np.cov(a, rowvar=False), mu_b, np.cov(b, rowvar=False)))
