"""Checks a run can make before importing the heavy libraries (Lightning alone takes 5-8 s to
import on a small machine): a mistake in the config or a missing weight folder is reported in
the time it takes to import torch, not after the whole stack has loaded.
"""

from __future__ import annotations

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from zoomsr.backbones.base import Backbone


def check(cfg: DictConfig) -> None:
    """Raise the user error a run would meet at start-up, cheaply.

    - Every mandatory value (``???``) is set: OmegaConf raises ``MissingMandatoryValue``, which
      :func:`zoomsr.errors.exit_on_user_error` reports as ``config value 'x' is required``.
    - The backbone's weights are where its config says: every backbone has
      ``check_weights(config)`` (a classmethod that raises ZoomSRError naming what is missing).
    """
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    target = OmegaConf.select(cfg, "backbone._target_")
    if target:
        cls = get_class(target)  # imports the backbone's module only
        if issubclass(cls, Backbone):  # Backbone.check_weights: a no-op unless overridden
            cls.check_weights(cfg.backbone)
