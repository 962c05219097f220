"""Hydra's ``instantiate`` with the user's errors unwrapped.

Hydra wraps an exception raised in a constructor in ``InstantiationException``; a
:class:`~zoomsr.errors.ZoomSRError` (a bad value the user can fix) is re-raised as itself so the
entry points print its one line.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate


def instantiate_user(node: Any, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; a :class:`ZoomSRError` cause is raised unwrapped."""
    from zoomsr.errors import ZoomSRError

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ZoomSRError):
            raise err.__cause__ from None
        raise
