"""Keep secrets out of everything ubsafe writes: logs, error.json, run.toml, reports.

An API key or token can reach a message by many roads (an endpoint that echoes it in an error, an
exception from an HTTP library, a setting copied by mistake). Every writer passes its text through
`redact`, which removes the values of this process's secret environment variables and anything
shaped like a known key.
"""

from __future__ import annotations

import logging
import os
import re

REDACTED = "[redacted]"

#: Environment variables whose value is a secret, by name.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)

#: Shapes of keys and tokens, whatever variable they came from; group `keep`, when present, is the
#: label in front of the secret, which stays.
_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"),  # OpenAI and compatible servers
    re.compile(r"\bhf_[A-Za-z0-9]{16,}"),  # Hugging Face
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub
    re.compile(r"(?i)(?P<keep>\bbearer\s+)[^\s\"',;]+"),
    re.compile(
        r"(?i)(?P<keep>\b(?:api[_-]?key|access[_-]?token|token|secret|password)[\"']?\s*[:=]\s*"
        r"[\"']?)[^\s\"',;}]{6,}"
    ),
)

#: Short values would redact ordinary words.
_MIN_SECRET_LENGTH = 8


def secret_values(extra: tuple[str, ...] = ()) -> list[str]:
    """This process's secret values (longest first, so a key is not cut by one of its parts)."""
    values = {
        value
        for name, value in os.environ.items()
        if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH
    }
    values.update(v for v in extra if v and len(v) >= _MIN_SECRET_LENGTH)
    return sorted(values, key=len, reverse=True)


def redact(text: str, *, extra: tuple[str, ...] = ()) -> str:
    """`text` with secrets replaced by `[redacted]`; `extra` adds values known to the caller."""
    for value in secret_values(extra):
        text = text.replace(value, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(_replacement, text)
    return text


def _replacement(match: re.Match[str]) -> str:
    keep = match.groupdict().get("keep") or ""
    return keep + REDACTED


class RedactingFormatter(logging.Formatter):
    """A log formatter whose output (message, arguments, traceback) passes through `redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
