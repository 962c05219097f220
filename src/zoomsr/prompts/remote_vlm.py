"""Prompts from a VLM behind any OpenAI-compatible chat-completions endpoint (vLLM, SGLang,
llama.cpp's server, TGI, hosted APIs).

The request is CoZ's chat (see :mod:`zoomsr.prompts.vlm`) in the OpenAI format: the instruction
as the system message (or, with ``instruction_role=user``, as a text part after the images) and
each view as a base64 PNG ``image_url`` part of the user message, the wider view first in
multi-scale mode. Only the standard library is used (``urllib``).

Failure is bounded: the server's port is probed once with ``connect_timeout`` (a host that is
down fails in seconds, not after ``timeout``), and each request is tried at most
``retries + 1`` times (timeouts, connection errors, broken HTTP such as ``BadStatusLine`` or
``IncompleteRead``, replies above ``max_reply_bytes``, HTTP 408/429/5xx, no chat completion),
with a deadline of ``timeout`` seconds per try for the whole exchange (a server trickling bytes
is cut off) and 0.5 s, 1 s, 2 s... between tries. Other HTTP errors fail at once. Once the
endpoint has failed, the source fails at once on every later call (a folder of images or a
training run stops at the first failure instead of waiting out the timeouts image by image).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import socket
import threading
import time
import urllib.request
from typing import Literal
from urllib.parse import urlsplit

import torch

from zoomsr.errors import ZoomSRError
from zoomsr.prompts.base import (
    MULTI_VIEW_INSTRUCTION,
    SINGLE_VIEW_INSTRUCTION,
    PromptSource,
    to_pil,
)

RETRY_STATUS = (408, 429, 500, 502, 503, 504)


class _Failure(Exception):
    """One failed try of a request (retried within ``retries``)."""


def _abort(conn: http.client.HTTPConnection) -> None:
    """Cut a connection whose request ran past its deadline: a blocked read returns at once."""
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def image_part(image: torch.Tensor) -> dict:
    """``(3, h, w)`` in [0, 1] -> an OpenAI ``image_url`` content part (8-bit PNG, base64)."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def reply_text(body: dict) -> str:
    """The assistant's text of a chat-completions response (string or list-of-parts content)."""
    content = body["choices"][0]["message"]["content"]
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise TypeError(f"content is {type(content).__name__}")
    return content


class RemoteVLMPrompt(PromptSource):
    """CoZ prompts from a remote, OpenAI-compatible VLM.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is
            appended unless already there).
        model: the model name the server knows.
        api_key_env: name of the environment variable holding the API key (sent as a bearer
            token when set; local servers usually need none).
        max_tokens: answer length (CoZ: 32 new tokens).
        temperature: 0 (default) asks for greedy decoding.
        timeout: seconds per request try, in all (connecting, sending, the whole reply).
        max_reply_bytes: the largest reply accepted (default 64 KiB; a prompt is a sentence).
        connect_timeout: seconds for the one-time reachability probe.
        retries: extra tries after a timeout, connection error or HTTP 408/429/5xx.
        instruction_role: ``system`` (CoZ's layout) or ``user`` (a text part after the images,
            for servers whose templates drop system turns).
        instruction, multiscale_instruction: CoZ's one- and two-view instructions by default.
        user_text, user_file, cache: see :class:`~zoomsr.prompts.base.PromptSource`.
    """

    uses_model = True

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "Qwen/Qwen2.5-VL-3B-Instruct",
        api_key_env: str | None = "OPENAI_API_KEY",
        max_tokens: int = 32,
        temperature: float = 0.0,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        max_reply_bytes: int = 65536,
        instruction_role: Literal["system", "user"] = "system",
        instruction: str = SINGLE_VIEW_INSTRUCTION,
        multiscale_instruction: str = MULTI_VIEW_INSTRUCTION,
        user_text: str | None = None,
        user_file: str | None = None,
        cache: str | None = None,
    ) -> None:
        super().__init__(user_text, user_file, cache)
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ZoomSRError(f"prompt.base_url must be an http(s) URL, got '{base_url}'.")
        if instruction_role not in ("system", "user"):
            raise ZoomSRError(f"prompt.instruction_role must be system|user: {instruction_role}")
        url = base_url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.max_tokens, self.temperature = max_tokens, temperature
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.retries, self.instruction_role = max(0, retries), instruction_role
        self.max_reply_bytes = int(max_reply_bytes)
        self.instructions = {1: instruction, 2: multiscale_instruction}
        self._reachable = False
        self._failure: str | None = None

    def settings(self) -> dict:
        return {
            "source": "remote_vlm",
            "url": self.url,
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "instruction_role": self.instruction_role,
            "instructions": self.instructions,
        }

    def request_body(self, images: list[torch.Tensor]) -> dict:
        """The chat-completions request for one image's views ``(3, h, w)``, widest first."""
        instruction = self.instructions[len(images)]
        content = [image_part(img) for img in images]
        chat = [{"role": "user", "content": content}]
        if self.instruction_role == "system":
            chat.insert(0, {"role": "system", "content": instruction})
        else:
            content.append({"type": "text", "text": instruction})
        return {
            "model": self.model,
            "messages": chat,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": False,
        }

    def describe(self, views: list[torch.Tensor], step: int) -> list[str]:
        if self._failure is not None:
            raise ZoomSRError(f"{self._failure} (failed before; not asked again)")
        try:
            self._probe()
            bodies = [self.request_body([v[i] for v in views]) for i in range(len(views[0]))]
            return [self._complete(body) for body in bodies]
        except ZoomSRError as err:
            self._failure = str(err)
            raise

    def _probe(self) -> None:
        """Fail in ``connect_timeout`` seconds when nothing listens at the server's port."""
        if self._reachable:
            return
        parts = urlsplit(self.url)
        if urllib.request.getproxies() and not urllib.request.proxy_bypass(parts.hostname):
            return  # a proxy carries the request: the direct port says nothing
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=self.connect_timeout).close()
        except OSError as err:
            raise ZoomSRError(
                f"remote VLM endpoint {self.url} is not reachable ({err}): start the server or "
                "set prompt.base_url=<http://host:port/v1>."
            ) from None
        self._reachable = True

    def _complete(self, body: dict) -> str:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 4.0))
            try:
                status, answer = self._post(data, headers)
            except _Failure as err:
                last = str(err)
                continue
            if status in RETRY_STATUS:
                last = f"HTTP {status}: {answer[:300].decode('utf-8', 'replace')}"
                continue
            if not 200 <= status < 300:
                hint = f" (set ${self.api_key_env})" if status in (401, 403) else ""
                detail = answer[:300].decode("utf-8", "replace")
                raise ZoomSRError(f"remote VLM {self.url} answered HTTP {status}{hint}: {detail}")
            try:
                return self._parse(answer)
            except ZoomSRError as err:
                last = str(err)
                continue
        raise ZoomSRError(
            f"remote VLM {self.url} failed {self.retries + 1} time(s), {self.timeout:g} s "
            f"each at most: {last}. Check the server, or raise prompt.timeout / prompt.retries."
        )

    def _post(self, data: bytes, headers: dict) -> tuple[int, bytes]:
        """One POST: ``(status, body)`` within ``timeout`` seconds in all (not per socket read:
        a server sending a byte a second is cut off) and at most ``max_reply_bytes`` of body.

        Raises:
            _Failure: the deadline passed, the reply was too large, or the connection or the
                HTTP exchange failed (``BadStatusLine``, ``IncompleteRead``, resets, ...).
        """
        conn, path = self._connection()
        deadline = time.monotonic() + self.timeout
        watchdog = threading.Timer(self.timeout, _abort, (conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("POST", path, body=data, headers=headers)
            response = conn.getresponse()
            body = bytearray()
            while chunk := response.read1(65536):
                body += chunk
                if len(body) > self.max_reply_bytes:
                    raise _Failure(
                        f"the reply exceeds prompt.max_reply_bytes={self.max_reply_bytes}"
                    )
                if time.monotonic() > deadline:
                    raise _Failure(f"no complete reply within prompt.timeout={self.timeout:g} s")
            if time.monotonic() >= deadline:  # the watchdog cut the connection
                raise _Failure(f"no complete reply within prompt.timeout={self.timeout:g} s")
            if response.length:  # the server closed before the announced length
                raise http.client.IncompleteRead(bytes(body), response.length)
            return response.status, bytes(body)
        except (http.client.HTTPException, OSError, ValueError) as err:
            if time.monotonic() >= deadline:
                raise _Failure(
                    f"no complete reply within prompt.timeout={self.timeout:g} s"
                ) from None
            raise _Failure(f"{type(err).__name__}: {err}".rstrip(": ")) from None
        finally:
            watchdog.cancel()
            conn.close()

    def _connection(self) -> tuple[http.client.HTTPConnection, str]:
        """A connection to the server (or to the environment's proxy for it) and the path."""
        parts = urlsplit(self.url)
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy = urllib.request.getproxies().get(parts.scheme)
        if proxy and urllib.request.proxy_bypass(parts.hostname):
            proxy = None
        kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
        if not proxy:
            return kind(parts.hostname, port, timeout=self.timeout), path
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if https:
            conn = kind(via.hostname, via.port or 80, timeout=self.timeout)
            conn.set_tunnel(parts.hostname, port)
            return conn, path
        return http.client.HTTPConnection(via.hostname, via.port or 80, timeout=self.timeout), (
            self.url
        )

    def _parse(self, answer: bytes) -> str:
        try:
            return reply_text(json.loads(answer))
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise ZoomSRError(
                f"remote VLM {self.url} sent no chat completion ({err}): "
                f"{answer[:200].decode('utf-8', 'replace')}"
            ) from None
