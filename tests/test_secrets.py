"""Secrets never reach what ubsafe writes: an endpoint that echoes the API key in its 401, the
redaction of logs, error.json and reports, and the warning for a plain-http remote endpoint."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import Loopback, Reply
from vlm_stage_fixtures import GPT4V_QUERY, run_stages, start_run, write_dataset

from ubsafe.redact import redact
from ubsafe.testing import tiny
from ubsafe.vlm.openai_client import ChatAPIError, ChatClient, insecure_endpoint

KEY = "sk-proj-CANARYKEY0123456789abcdefXYZ"


class EchoingAPI(Loopback):
    """A chat-completions endpoint on 127.0.0.1 that refuses every request with a 401 whose body
    quotes the Authorization header it received (some servers and proxies do)."""

    def __init__(self) -> None:
        def respond(body: dict[str, Any], headers: dict[str, str]) -> Reply:
            auth = headers.get("Authorization", "")
            message = f"Incorrect API key provided: {auth.split()[-1]}"
            return 401, {"error": {"message": message}}, {}

        super().__init__(respond)


@pytest.fixture()
def api() -> Iterator[EchoingAPI]:
    with EchoingAPI() as server:
        yield server


def test_a_key_echoed_in_a_401_appears_nowhere_under_the_run(
    api: EchoingAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers")
    monkeypatch.setenv("OPENAI_BASE_URL", api.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    weights = tmp_path / "weights"
    tiny.save_tiny_converter(weights)
    dataset = write_dataset(tmp_path / "data", 4, 4)
    run = start_run(
        tmp_path / "run",
        dataset,
        weights,
        **GPT4V_QUERY,
    )
    failed = run_stages(run)
    assert failed.get("score"), "the endpoint refused every request: the score shards fail"
    errors = list(run.root.rglob("*.error.json"))
    assert errors
    message = json.loads(errors[0].read_text(encoding="utf-8"))["message"]
    assert "HTTP 401" in message and "Incorrect API key provided: [redacted]" in message
    for path in run.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data, path
            assert KEY[8:24].encode() not in data, path  # no part of it either


def test_the_client_error_never_quotes_the_key_even_when_not_exported(api: EchoingAPI) -> None:
    client = ChatClient(base_url=api.url, api_key="an-unexported-key-123456")
    from PIL import Image

    with pytest.raises(ChatAPIError) as err:
        client.ask(Image.new("RGB", (4, 4)), "is it safe?")
    assert "an-unexported-key-123456" not in str(err.value)
    assert "[redacted]" in str(err.value)


def test_redaction_of_known_key_shapes_and_secret_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "plainvalue-without-shape")
    text = (
        "Authorization: Bearer abc.def.ghi hf_abcdefghijklmnopqrstuvwx sk-abcdefghijklmnop "
        '{"api_key": "qwertyuiop"} token=zxcvbnmasdf plainvalue-without-shape'
    )
    cleaned = redact(text)
    for secret in (
        "abc.def.ghi",
        "hf_abcdefghijklmnopqrstuvwx",
        "sk-abcdefghijklmnop",
        "qwertyuiop",
        "zxcvbnmasdf",
        "plainvalue-without-shape",
    ):
        assert secret not in cleaned
    assert cleaned.startswith("Authorization: Bearer [redacted]")
    assert redact("F1 0.83 on 1,024 images of run-2024") == "F1 0.83 on 1,024 images of run-2024"


def test_run_toml_and_reports_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from ubsafe.config import RunConfig
    from ubsafe.report.document import Document, Section, Text, to_html, to_markdown

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    config = RunConfig(dataset=f"/data/{KEY}", out="/tmp/x")
    assert KEY not in config.to_toml()
    doc = Document(f"report {KEY}", [f"intro {KEY}"], [Section("a", "A").add(Text(KEY))])
    assert KEY not in to_html(doc) and KEY not in to_markdown(doc)


def test_plain_http_to_another_machine_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    for url in ("https://api.openai.com/v1", "http://127.0.0.1:8000/v1", "http://localhost/v1"):
        assert insecure_endpoint(url) is None
    assert insecure_endpoint("http://[::1]:8000/v1") is None
    warning = insecure_endpoint("http://10.1.2.3:8000/v1")
    assert warning and "unencrypted" in warning
    with caplog.at_level(logging.WARNING):
        ChatClient(base_url="http://gpu-node-7:8000/v1", api_key="x")
    assert any("plain http" in r.message for r in caplog.records)
