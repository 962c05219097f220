"""Backbones: one zoom step of factor ``scale`` behind one contract (see ``base.Backbone``)."""

from zoomsr.backbones.base import Backbone

__all__ = ["Backbone"]
