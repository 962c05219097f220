"""The remote VLM source against a small OpenAI-compatible chat-completions server that the test
starts on 127.0.0.1 (http.server in a thread): the request it receives, the prompt made of its
answer, retries, and the errors when the endpoint is down or refuses."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from zoomsr.data.io import to_uint8
from zoomsr.errors import ZoomSRError
from zoomsr.prompts.base import MULTI_VIEW_INSTRUCTION, SINGLE_VIEW_INSTRUCTION
from zoomsr.prompts.remote_vlm import RemoteVLMPrompt


class Server:
    """Answers POST /v1/chat/completions with ``reply``; ``fail_first`` requests get HTTP 503.
    Keeps every request's headers and JSON body."""

    def __init__(self, reply: str = "red brick wall, ivy", fail_first: int = 0, status=200):
        self.reply, self.fail_first, self.status = reply, fail_first, status
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                if len(owner.requests) <= owner.fail_first:
                    return self._send(503, {"error": "warming up"})
                if owner.status != 200:
                    return self._send(owner.status, {"error": {"message": "no such model"}})
                answer = {
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": owner.reply}}
                    ]
                }
                self._send(200, answer)

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def decode_image(part: dict) -> np.ndarray:
    assert part["type"] == "image_url"
    header, data = part["image_url"]["url"].split(",", 1)
    assert header == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def views(n: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(n, 3, 40, 48, generator=g), torch.rand(n, 3, 10, 12, generator=g)]


def test_two_views_are_sent_as_images_and_the_answer_is_the_prompt(server, monkeypatch):
    monkeypatch.setenv("ZOOMSR_TEST_KEY", "sk-test")
    source = RemoteVLMPrompt(
        base_url=server.url, model="qwen-vl", api_key_env="ZOOMSR_TEST_KEY", cache=None
    )
    v = views()
    assert source(v, step=1) == ["red brick wall, ivy"]
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "qwen-vl" and body["max_tokens"] == 32 and body["temperature"] == 0
    system, user = body["messages"]
    assert system == {"role": "system", "content": MULTI_VIEW_INSTRUCTION}
    assert user["role"] == "user" and len(user["content"]) == 2
    # The wider view first, then the zoom, each exactly the view's 8-bit pixels.
    for part, view in zip(user["content"], v):
        np.testing.assert_array_equal(
            decode_image(part), to_uint8(view[0]).permute(1, 2, 0).numpy()
        )


def test_one_view_user_instruction_and_user_text(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    source = RemoteVLMPrompt(
        base_url=server.url + "/chat/completions",  # the full endpoint is accepted too
        instruction_role="user",
        user_text="high detail",
        cache=None,
    )
    assert source([views(2)[1]], step=1) == ["red brick wall, ivy, high detail,"] * 2
    assert len(server.requests) == 2  # one request per image
    (user,) = server.requests[0]["body"]["messages"]
    assert [p["type"] for p in user["content"]] == ["image_url", "text"]
    assert user["content"][1]["text"] == SINGLE_VIEW_INSTRUCTION
    assert "Authorization" not in server.requests[0]["headers"]  # no key set: none sent


def test_cache_second_run_sends_nothing(server, tmp_path):
    cache = str(tmp_path / "remote.jsonl")
    first = RemoteVLMPrompt(base_url=server.url, cache=cache)
    first(views(2), step=1)
    again = RemoteVLMPrompt(base_url=server.url, cache=cache)
    assert again(views(2), step=3) == ["red brick wall, ivy"] * 2
    assert (first.model_calls, again.model_calls, len(server.requests)) == (2, 0, 2)


def test_retries_are_bounded():
    flaky = Server(fail_first=2)
    try:
        assert RemoteVLMPrompt(base_url=flaky.url, retries=2)(views()) == ["red brick wall, ivy"]
        assert len(flaky.requests) == 3
    finally:
        flaky.close()
    down = Server(fail_first=99)
    try:
        with pytest.raises(ZoomSRError, match=r"failed 2 time\(s\).*HTTP 503"):
            RemoteVLMPrompt(base_url=down.url, retries=1)(views())
        assert len(down.requests) == 2
    finally:
        down.close()


def test_client_errors_fail_at_once():
    refusing = Server(status=404)
    try:
        with pytest.raises(ZoomSRError, match="answered HTTP 404.*no such model"):
            RemoteVLMPrompt(base_url=refusing.url, retries=3)(views())
        assert len(refusing.requests) == 1
    finally:
        refusing.close()


def test_endpoint_down_is_a_clear_error():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = RemoteVLMPrompt(base_url=f"http://127.0.0.1:{port}/v1", cache=None)
    with pytest.raises(
        ZoomSRError, match=rf"127.0.0.1:{port}/v1/chat/completions is not reachable"
    ):
        source(views())
    with pytest.raises(ZoomSRError, match="must be an http"):
        RemoteVLMPrompt(base_url="127.0.0.1:8000")
