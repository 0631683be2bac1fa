"""Image encoders: a registry of entry files, and loaders that build them offline.

    from ubsafe.encoders import load_encoder
    encoder = load_encoder("vit-l-14-openai", weights_dir)
    pixels = encoder.to_inputs(images)        # the encoder's own resize + crop, [0, 1]
    embeddings = encoder.encode(pixels)       # float32 [B, 768], raw, batch-invariant

Importing this package is light (no torch): registry and identity functions work without it;
`load_encoder` and `Encoder` import torch and the model libraries on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ubsafe.encoders.identity import (
    EMBEDDING_FORMAT_VERSION,
    PRECISIONS,
    cache_key,
    entry_identity,
    identity,
)
from ubsafe.encoders.registry import (
    EncoderEntry,
    UnknownEncoderError,
    add_registry_path,
    get_entry,
    list_encoders,
    missing_weights,
    weight_files,
)

if TYPE_CHECKING:
    from ubsafe.encoders.encoder import Encoder
    from ubsafe.encoders.loader import load_encoder

__all__ = [
    "EMBEDDING_FORMAT_VERSION",
    "PRECISIONS",
    "Encoder",
    "EncoderEntry",
    "UnknownEncoderError",
    "add_registry_path",
    "cache_key",
    "entry_identity",
    "get_entry",
    "identity",
    "list_encoders",
    "load_encoder",
    "missing_weights",
    "weight_files",
]


def __getattr__(name: str) -> Any:
    # torch-backed names load on first use, so `ubsafe --help` never imports torch.
    if name == "load_encoder":
        from ubsafe.encoders.loader import load_encoder

        return load_encoder
    if name == "Encoder":
        from ubsafe.encoders.encoder import Encoder

        return Encoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
