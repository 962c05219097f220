"""The web UI (``zoomsr ui``): Chain-of-Zoom in the browser with any backbone, on gradio.

``engine`` is the seam to the zoom code, ``app`` the request handlers, ``page`` the layout,
``pictures`` the zoom map and stitched images; ``python -m zoomsr.ui --help``.
"""
