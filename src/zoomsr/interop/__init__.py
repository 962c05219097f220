"""Converters between zoomsr checkpoints and other projects' released weights."""
