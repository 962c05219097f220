"""The user's own text as the prompt: one text for all images, or per image from a file."""

from __future__ import annotations

from zoomsr.prompts.base import PromptSource


class ManualPrompt(PromptSource):
    """The user text alone (nothing generated). With a model-backed source the same text is
    joined after the generated prompt instead (``prompt.user_text`` of those sources).

    Args:
        user_text: the prompt of every image (and of images ``user_file`` does not name).
        user_file: a JSON object ``{"<image name>": "text"}`` or a folder of ``<stem>.txt``;
            names are the input file stems (``infer.py``) or the dataset's ``name`` (training).
    """

    def __init__(self, user_text: str | None = None, user_file: str | None = None) -> None:
        super().__init__(user_text=user_text, user_file=user_file)
