"""User-facing errors.

Anything a user can cause (a wrong path, an unreadable image, a bad config value, a missing
weight file) raises :class:`ZoomSRError` with one message that names the thing and the fix.
The entry points print that message alone, without a traceback, and exit with status 2.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ZoomSRError(Exception):
    """An error caused by input or configuration, with a message meant for the user."""


def exit_on_user_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate an entry point so a :class:`ZoomSRError` prints one line and exits with 2.

    Set ``ZOOMSR_TRACEBACK=1`` to see the full traceback instead.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            message = user_message(err)
            if message is None or os.environ.get("ZOOMSR_TRACEBACK") == "1":
                raise
            print(f"zoomsr error: {message}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def user_message(err: BaseException) -> str | None:
    """The message to show for an error the user can fix, or None for a bug (full traceback).

    Hydra wraps errors raised in a constructor in ``InstantiationException``; the cause is
    looked through. A required config value left as ``???`` names its key.
    """
    from omegaconf.errors import MissingMandatoryValue

    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, ZoomSRError):
            return _worker_message(str(err))
        if isinstance(err, MissingMandatoryValue):
            key = getattr(err, "full_key", None) or str(err)
            return f"config value '{key}' is required: pass {key}=<value> on the command line."
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def _worker_message(text: str) -> str:
    """A ZoomSRError re-raised from a DataLoader worker carries the worker's traceback
    ("Caught ZoomSRError in DataLoader worker process 0. Original Traceback ..."): keep its own
    message only."""
    if "Original Traceback" not in text:
        return text
    marker = "ZoomSRError: "
    last = text.rstrip().splitlines()[-1]
    i = text.rfind(marker)
    return text[i + len(marker) :].strip() if i >= 0 else last.strip()


def check_overrides(conf_dir: str | os.PathLike, config_name: str, argv: list[str] | None = None):
    """Compose the config with the command line's overrides before Hydra runs, and turn
    Hydra's own errors (an unknown option of a group, a misspelled key, a parse error; exit 1
    with several lines) into one line and exit 2. Multirun and Hydra's flags are left to Hydra.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a.startswith("-") for a in args):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(os.path.abspath(conf_dir)), version_base="1.3"):
            compose(config_name=config_name, overrides=args)
    except (HydraException, OmegaConfBaseException) as err:
        print(f"zoomsr error: {_hydra_message(err, conf_dir)}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception:  # anything else: Hydra reports it itself when it composes
        return


def _hydra_message(err: BaseException, conf_dir) -> str:
    text = str(err)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Could not find" in text and "Available options" in text:
        i = next(n for n, ln in enumerate(lines) if ln.startswith("Available options"))
        group = lines[i].split("'")[1] if "'" in lines[i] else "the group"
        head = lines[0].split(": ", 1)[-1]
        options = []
        for line in lines[i + 1 :]:
            if line.startswith("Config search path"):
                break
            options.append(line)
        return f"{head}; options of {group}: {', '.join(options)}."
    if "Could not override" in text or "not in struct" in text:
        key = text.split("'")[1] if "'" in text else "?"
        return (
            f"'{key}' is not a config key (misspelled?); see `python <script>.py --cfg job` for "
            f"the keys, or append a new key with +{key}=<value>."
        )
    return " ".join(lines)


def reject_null_group_overrides(conf_dir: str | os.PathLike, argv: list[str] | None = None) -> None:
    """Exit with one line for ``group=null`` on the command line, before Hydra sees it.

    Hydra cannot take ``null`` as the choice of a config group from the command line (it stops
    with a traceback, "Config group override must be a string or a list"); name the options.
    """
    groups = {p.name for p in os.scandir(conf_dir) if p.is_dir()}
    for arg in sys.argv[1:] if argv is None else argv:
        key, sep, value = arg.partition("=")
        if sep and value == "null" and key in groups:
            options = sorted(
                n[:-5] for n in os.listdir(os.path.join(conf_dir, key)) if n.endswith(".yaml")
            )
            hint = " (prompt=none is the empty prompt)" if key == "prompt" else ""
            print(
                f"zoomsr error: '{arg}': Hydra cannot set a config group to null from the "
                f"command line; choose one of {options}{hint}.",
                file=sys.stderr,
            )
            raise SystemExit(2)
