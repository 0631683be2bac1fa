"""What makes two embeddings of the same image equal: the identity an embedding cache is keyed by.

The identity is computed from the registry entry alone (no weights, no torch), so that a status
check on a login node and a worker on a GPU node name the same cache folder. It holds everything
that changes embeddings by design: model, weights, preprocessing, compute precision policy, output
kind and ubsafe's embedding format version. Rounding-level facts that depend on the machine (device
model, micro-batch, library versions) are reported by `Encoder.provenance()` instead, for the shard
files' attributes.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from ubsafe.encoders.registry import EncoderEntry, get_entry

#: Bump when the meaning of a stored embedding changes (output kind, preprocessing semantics).
EMBEDDING_FORMAT_VERSION = 1

#: Version of the seed-free weight generator behind `init: deterministic` entries.
DETERMINISTIC_INIT_VERSION = 2

#: `auto`: bfloat16 weights and inputs on CUDA, float32 on CPU. `float32`: float32 everywhere.
Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")


def entry_identity(entry: EncoderEntry, precision: str = "auto") -> dict[str, Any]:
    """Everything that changes the stored embeddings of `entry`, as plain JSON values."""
    check_precision(precision)
    identity: dict[str, Any] = {
        "format": EMBEDDING_FORMAT_VERSION,
        "encoder": entry.key,
        "family": entry.family,
        "model": entry.model,
        "pretrained": entry.pretrained,
        "quick_gelu": entry.quick_gelu,
        "weights": [
            _weight_id(spec.repo, spec.filename, spec.revision, spec.sha256)
            for spec in entry.weights
        ],
        "embed_dim": entry.embed_dim,
        "preprocess": entry.preprocess.model_dump(mode="json"),
        "precision": precision,
        # bfloat16 means bfloat16 weights and inputs (it was autocast around float32 weights)
        "bfloat16": "weights" if precision != "float32" else None,
        "output": "raw",  # unnormalised embedding, as encode_image / visual_projection return it
    }
    if entry.init == "deterministic":
        identity["init"] = f"deterministic-v{DETERMINISTIC_INIT_VERSION}"
    config = entry.model_config_file
    if config is not None:
        identity["model_config_sha256"] = _file_digest(config)
    return identity


def identity(key: str, precision: str = "auto") -> dict[str, Any]:
    """`entry_identity` of the registry entry `key`."""
    return entry_identity(get_entry(key), precision)


def identity_cache_key(ident: dict[str, Any]) -> str:
    """`<key>-<8 hex>`: the entry key made safe as a folder name, and a digest of `ident`."""
    canonical = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]
    safe_key = re.sub(r"[^A-Za-z0-9._-]+", "-", str(ident["encoder"])).strip("-.")
    return f"{safe_key}-{digest}"


def cache_key(key: str, precision: str = "auto") -> str:
    """The cache folder name of encoder `key` at `precision`, without loading anything."""
    return identity_cache_key(identity(key, precision))


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")


def _weight_id(repo: str, filename: str, revision: str | None, sha256: str | None) -> str:
    text = f"{repo}/{filename}@{revision or 'main'}"
    return f"{text}#sha256={sha256}" if sha256 else text


def _file_digest(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"open_clip model config {path} cannot be read: {exc}") from None
    # Canonical JSON, so reformatting the file does not change the key but a changed value does.
    canonical = json.dumps(json.loads(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
