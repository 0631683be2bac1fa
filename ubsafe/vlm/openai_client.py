"""An OpenAI-compatible chat-completions client for new VLM queries, and the GPT-4V judge on it.

The request is the paper's (`vlms.py`): one user message with the prompt text and the image as a
base64 PNG data URL, temperature 0, at most 512 tokens. The endpoint comes from `OPENAI_BASE_URL`
(default `https://api.openai.com/v1`) and the key from `OPENAI_API_KEY`, so any compatible server
(vLLM, a proxy, a local test server) can stand in.

Three things make it fit for a batch job:
- a rate limit (requests per minute, shared by the client's threads);
- retries with exponential backoff (and the server's `Retry-After`) on 408/409/429/5xx, timeouts and
  dropped connections; other errors stop at once with the server's message;
- the key never reaches a message: an endpoint's error text is redacted (servers that echo the key
  in a 401 exist), and a plain-http endpoint on another machine is warned about (the key would
  cross the network in clear text);
- a resumable on-disk cache: one JSON file per (model, prompt, image, decoding settings), written
  atomically, so a rerun — or a requeued Slurm task — never asks the same question twice.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import ipaddress
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ubsafe import atomic
from ubsafe.redact import redact
from ubsafe.vlm.converter import ResponseConverter
from ubsafe.vlm.judge import VLMJudge

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ChatSettings:
    """What is asked (model, decoding) and how politely (rate, retries, timeout)."""

    model: str = "gpt-4-vision-preview"
    temperature: float = 0.0
    max_tokens: int = 512
    top_p: float | None = None
    requests_per_minute: float = 60.0
    max_retries: int = 6
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    timeout: float = 120.0
    workers: int = 1

    def decoding(self) -> dict[str, Any]:
        """The fields that change an answer (part of the cache key)."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
        }


class ChatAPIError(RuntimeError):
    """The endpoint refused a request, or kept failing past the retries."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


def insecure_endpoint(base_url: str) -> str | None:
    """A warning when `base_url` sends the key in clear text to another machine, else None."""
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    if parts.scheme != "http":
        return None
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"OPENAI_BASE_URL {base_url} is plain http to another machine: the API key and every "
        "image cross the network unencrypted. fix: use https, or a tunnel to 127.0.0.1"
    )


class RateLimiter:
    """At most `per_minute` request starts per minute, evenly spaced; thread-safe."""

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if per_minute <= 0:
            raise ValueError(f"requests_per_minute must be positive, got {per_minute}")
        self.interval = 60.0 / per_minute
        self._clock = clock
        self._sleep = sleep
        self._next = -float("inf")
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)


def image_digest(image: Image.Image) -> str:
    """SHA-256 of an image's decoded pixels (mode, size, bytes): stable across encoders."""
    digest = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class ResponseCache:
    """One JSON file per question under `folder/<2 hex>/<key>.json`; written atomically."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)

    @staticmethod
    def key(decoding: dict[str, Any], prompt: str, image_sha256: str) -> str:
        canonical = json.dumps(
            {"decoding": decoding, "prompt": prompt, "image": image_sha256},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self.path(key)
        if not path.is_file():
            return None
        return str(json.loads(path.read_text(encoding="utf-8"))["response"])

    def put(self, key: str, record: dict[str, Any]) -> None:
        atomic.write_text(self.path(key), json.dumps(record, ensure_ascii=False, indent=1))


class ChatClient:
    """Ask an OpenAI-compatible endpoint about images; cached, rate-limited, retried."""

    def __init__(
        self,
        settings: ChatSettings | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings or ChatSettings()
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key
        warning = insecure_endpoint(base_url)
        if warning:
            log.warning(warning)
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self.limiter = RateLimiter(self.settings.requests_per_minute, sleep=sleep)
        self._sleep = sleep
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0}

    @classmethod
    def from_env(
        cls,
        settings: ChatSettings | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> ChatClient:
        """Endpoint from `OPENAI_BASE_URL`, key from `OPENAI_API_KEY` (required)."""
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ChatAPIError(
                "OPENAI_API_KEY is not set: export it (and OPENAI_BASE_URL for a compatible "
                "server other than api.openai.com) before querying"
            )
        base = os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        return cls(settings, base_url=base, api_key=key, cache_dir=cache_dir)

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def payload(self, prompt: str, image: Image.Image) -> dict[str, Any]:
        """The chat-completions request body for one question."""
        encoded = base64.b64encode(png_bytes(image)).decode("ascii")
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{encoded}"},
                        },
                    ],
                }
            ],
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }
        if self.settings.top_p is not None:
            body["top_p"] = self.settings.top_p
        return body

    def ask(self, image: Image.Image, prompt: str) -> str:
        """The answer to `prompt` about `image`: from the cache if asked before, else the API."""
        key = None
        if self.cache is not None:
            key = ResponseCache.key(self.settings.decoding(), prompt, image_digest(image))
            cached = self.cache.get(key)
            if cached is not None:
                self._count("cache_hits")
                return cached
        reply = self._post(self.payload(prompt, image))
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ChatAPIError(
                f"{self.url} answered without choices[0].message.content: "
                + self._clean(json.dumps(reply)[:300])
            ) from None
        if self.cache is not None and key is not None:
            self.cache.put(
                key,
                {
                    "response": text,
                    "decoding": self.settings.decoding(),
                    "prompt": prompt,
                    "image_sha256": image_digest(image),
                    "finish_reason": reply["choices"][0].get("finish_reason"),
                    "served_model": reply.get("model"),
                },
            )
        return str(text)

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        base = min(self.settings.backoff_max, self.settings.backoff_initial * 2**attempt)
        # Jitter spreads the retries of many array tasks hitting the same limit.
        return base * (1.0 + 0.25 * random.random())

    def _clean(self, text: str) -> str:
        """An endpoint's text without the key (some servers echo it) or any other secret."""
        return redact(text, extra=(self.api_key,) if self.api_key else ())

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                self._count("retries")
            self.limiter.wait()
            self._count("requests")
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            retry_after = None
            try:
                with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                    return dict(json.loads(response.read().decode("utf-8")))
            except urllib.error.HTTPError as exc:
                detail = self._clean(exc.read().decode("utf-8", "replace")[:500])
                if exc.code not in RETRY_STATUSES:
                    hint = " (check OPENAI_API_KEY)" if exc.code in (401, 403) else ""
                    raise ChatAPIError(
                        f"{self.url} refused the request: HTTP {exc.code}{hint}: {detail}",
                        status=exc.code,
                    ) from None
                last = f"HTTP {exc.code}: {detail}"
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
            except (
                urllib.error.URLError,
                TimeoutError,
                ConnectionError,
                http.client.HTTPException,
            ) as exc:
                last = self._clean(f"{type(exc).__name__}: {exc}")
            if attempt < self.settings.max_retries:
                self._sleep(self._backoff(attempt, retry_after))
        raise ChatAPIError(
            f"{self.url} failed {self.settings.max_retries + 1} times; last error {last}. "
            "Cached answers are kept: rerun to resume, or lower requests_per_minute"
        )


class ChatJudge(VLMJudge):
    """GPT-4V (or any OpenAI-compatible VLM) answering the paper's prompts, through `ChatClient`."""

    name = "gpt4v"

    def __init__(self, client: ChatClient, converter: ResponseConverter, **kwargs: Any):
        super().__init__(converter, **kwargs)
        self.client = client

    def generate(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[str]:
        pairs = list(zip(images, prompts, strict=True))
        workers = max(1, self.client.settings.workers)
        if workers == 1:
            return [self.client.ask(image, prompt) for image, prompt in pairs]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda pair: self.client.ask(*pair), pairs))
