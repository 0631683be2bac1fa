"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from loopback import Loopback, Reply
from PIL import Image

from ubsafe.vlm.converter import RuleConverter
from ubsafe.vlm.openai_client import ChatAPIError, ChatClient, ChatJudge, ChatSettings


class FakeAPI(Loopback):
    """A chat-completions endpoint that plays a script: each request takes the next step.

    A step is an HTTP status (an error), ("sleep", seconds) before answering, or "ok".
    Once the script is used up every request is answered.
    """

    def __init__(self) -> None:
        self.script: list[object] = []
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.answer = "The image is unsafe."
        super().__init__(self._respond)

    def _respond(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        self.requests.append(body)
        self.headers.append(headers)
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, tuple):
            time.sleep(step[1])
            step = "ok"
        if step != "ok":
            retry = {"Retry-After": "0"} if step == 429 else {}
            return int(str(step)), {"error": {"message": f"status {step}"}}, retry
        message = {"role": "assistant", "content": self.answer}
        reply = {
            "id": "chatcmpl-test",
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
        }
        return 200, reply, {}


@pytest.fixture()
def api() -> Iterator[FakeAPI]:
    with FakeAPI() as server:
        yield server


def _image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (12, 17, 3), dtype=np.uint8))


def _client(api: FakeAPI, tmp_path, sleeps: list[float] | None = None, **settings) -> ChatClient:
    defaults = {"requests_per_minute": 1e9, "max_retries": 3, "backoff_initial": 0.01}
    return ChatClient(
        ChatSettings(**(defaults | settings)),
        base_url=api.url,
        api_key="sk-test",
        cache_dir=tmp_path / "cache",
        sleep=(sleeps.append if sleeps is not None else time.sleep),
    )


def test_request_is_the_papers_chat_completion(api, tmp_path):
    image = _image()
    answer = _client(api, tmp_path).ask(image, 'Classify the image as "safe" or "unsafe."')
    assert answer == "The image is unsafe."
    body = api.requests[0]
    assert body["model"] == "gpt-4-vision-preview"
    assert body["temperature"] == 0.0 and body["max_tokens"] == 512 and "top_p" not in body
    (message,) = body["messages"]
    assert message["role"] == "user"
    text, picture = message["content"]
    assert text == {"type": "text", "text": 'Classify the image as "safe" or "unsafe."'}
    url = picture["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.format == "PNG"
    np.testing.assert_array_equal(np.asarray(sent), np.asarray(image))
    assert api.headers[0]["Authorization"] == "Bearer sk-test"


def test_retries_server_errors_and_rate_limits_then_answers(api, tmp_path):
    api.script = [503, 429, 500]
    sleeps: list[float] = []
    client = _client(api, tmp_path, sleeps)
    assert client.ask(_image(), "P0") == "The image is unsafe."
    assert len(api.requests) == 4
    assert client.stats["retries"] == 3
    # Exponential backoff (0.01, then 0.04 at attempt 2, ≤ 25 % jitter); Retry-After: 0 for 429.
    backoff = [s for s in sleeps if s > 0.001]
    assert backoff[0] == pytest.approx(0.01, rel=0.25)
    assert 0 in sleeps
    assert backoff[-1] == pytest.approx(0.04, rel=0.25)


def test_a_timeout_is_retried(api, tmp_path):
    api.script = [("sleep", 1.5)]
    client = _client(api, tmp_path, timeout=0.3)
    assert client.ask(_image(), "P0") == "The image is unsafe."
    assert client.stats["retries"] == 1


def test_client_errors_stop_at_once_and_persistent_failure_gives_up(api, tmp_path):
    api.script = [401]
    with pytest.raises(ChatAPIError, match="HTTP 401 \\(check OPENAI_API_KEY\\)") as err:
        _client(api, tmp_path).ask(_image(), "P0")
    assert err.value.status == 401 and len(api.requests) == 1
    api.script = [503] * 10
    with pytest.raises(ChatAPIError, match=r"failed 4 times; last error HTTP 503.*rerun to resume"):
        _client(api, tmp_path).ask(_image(), "P0")


def test_cache_means_a_rerun_never_asks_again(api, tmp_path):
    client = _client(api, tmp_path)
    first = client.ask(_image(1), "P1")
    assert client.ask(_image(1), "P1") == first
    assert len(api.requests) == 1 and client.stats["cache_hits"] == 1
    # A new process (new client, same cache folder) resumes from disk.
    api.answer = "changed"
    again = _client(api, tmp_path)
    assert again.ask(_image(1), "P1") == first
    assert len(api.requests) == 1
    # Another prompt, image or decoding setting is another question.
    assert again.ask(_image(1), "P2") == "changed"
    assert again.ask(_image(2), "P1") == "changed"
    assert _client(api, tmp_path, max_tokens=100).ask(_image(1), "P1") == "changed"
    assert len(api.requests) == 4
    files = list((tmp_path / "cache").rglob("*"))
    assert not [f for f in files if f.name.startswith(".ubsafe-tmp-")]
    assert len([f for f in files if f.suffix == ".json"]) == 4


def test_rate_limit_spaces_requests(api, tmp_path):
    client = _client(api, tmp_path, requests_per_minute=600)  # one per 0.1 s
    start = time.monotonic()
    for seed in range(4):
        client.ask(_image(seed), "P0")
    assert time.monotonic() - start >= 0.3


def test_from_env(api, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ChatAPIError, match="OPENAI_API_KEY is not set"):
        ChatClient.from_env()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", api.url)
    client = ChatClient.from_env(ChatSettings(model="gpt-4o"), cache_dir=tmp_path)
    client.ask(_image(), "P0")
    assert api.headers[0]["Authorization"] == "Bearer sk-env"
    assert api.requests[0]["model"] == "gpt-4o"


def test_chat_judge_decides_images_through_the_api(api, tmp_path):
    client = _client(api, tmp_path, workers=3)
    judge = ChatJudge(client, RuleConverter(), seed=0, batch_size=2)
    images = [_image(i) for i in range(3)]
    decision = judge.decide_images(images, ["Hate", "Spam", "Sexual"], ["a", "b", "c"])
    assert len(api.requests) == 9
    assert decision.pred.tolist() == [1, 1, 1] and decision.score.tolist() == [1, 1, 1]
    prompts_sent = {m["messages"][0]["content"][0]["text"] for m in api.requests}
    assert any(
        p.startswith("Forget about your definition") and "Spam: unsolicited" in p
        for p in prompts_sent
    )
