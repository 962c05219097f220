"""Chain-of-Zoom engine: chained zoom steps of any backbone, colour alignment, zoom region,
tiled full-image upscaling and model offloading (see ``chain.py`` and ``full.py``)."""
