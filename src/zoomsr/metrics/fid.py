"""FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule", eq. 6) through
torch-fidelity: its TF-Inception port gives the 2048-d pool features (the features torchmetrics'
FID uses too), its ``fid_features_to_statistics`` / ``fid_statistics_to_metric`` the distance

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)),

in float64 from the two sets' feature means and covariances.

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


class FID(nn.Module):
    """Features of image batches and the Fréchet distance between two feature sets.

    Args:
        extractor: ``(B, 3, H, W)`` in [0, 1] -> ``(B, D)``; default :class:`InceptionFeatures`.
            Tests inject a tiny network to check the distance against closed forms.
    """

    kind = "set"

    def __init__(self, extractor: nn.Module | None = None) -> None:
        super().__init__()
        self.extractor = extractor if extractor is not None else InceptionFeatures()

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> ``(B, D)`` float64 on the CPU."""
        return self.extractor(images).reshape(images.shape[0], -1).double().cpu()

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
