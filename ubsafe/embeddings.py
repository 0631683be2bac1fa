"""The embedding cache: one HDF5 file per (encoder, variant, shard), written atomically.

    <cache>/<encoder cache key>/<data key>/<variant>/shard-NNNNN.h5

`encoder cache key` names the encoder and a digest of everything that changes its output (weights
tag, preprocessing, dtype, format version); `data key` is the dataset fingerprint and shard size, so
runs on the same data share files and runs on other data never collide. `variant` is `clean` or
`<perturbation>-<severity>-seed<seed>`.

Each file holds `embedding` (rows × dim, raw encoder output in float16 or float32, chunked by rows),
`sample_id`, the shard's undecodable samples (`skipped_id`, `skipped_reason`) and attributes that
identify it. A file counts only if those attributes match what the run expects — a missing or
foreign file is never read as zeros.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ubsafe import atomic

if TYPE_CHECKING:
    from ubsafe.rundir import Run

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

FORMAT_VERSION = 1
CHUNK_ROWS = 256


def variant_name(
    perturbation: str | None = None, severity: int = 0, seed: int = 0, fingerprint: str = ""
) -> str:
    """`clean`, or `<perturbation>-<severity>-seed<seed>[-<8 hex of the implementation>]`."""
    if perturbation is None:
        return "clean"
    import hashlib

    suffix = (
        f"-{hashlib.blake2b(fingerprint.encode(), digest_size=4).hexdigest()}"
        if fingerprint
        else ""
    )
    return f"{perturbation}-{severity}-seed{seed}{suffix}"


def data_key(run: Run) -> str:
    return f"{run.dataset_fingerprint[:16]}-s{run.config.shard_size}"


def shard_file(run: Run, encoder_key: str, variant: str, shard: int) -> Path:
    return run.config.cache_root / encoder_key / data_key(run) / variant / f"shard-{shard:05d}.h5"


@dataclass(frozen=True)
class Expected:
    """What a shard file must say about itself to count as complete for this run."""

    encoder_key: str
    variant: str
    shard: int
    n_rows: int
    fingerprint: str


def expected(run: Run, encoder_key: str, variant: str, shard: int) -> Expected:
    n_rows = run.shard_sizes.get(shard, 0)
    return Expected(encoder_key, variant, shard, n_rows, run.dataset_fingerprint)


def _h5py() -> Any:
    import h5py

    return h5py


def write_shard(
    path: Path,
    want: Expected,
    sample_ids: Sequence[str],
    embeddings: np.ndarray,
    skipped: Sequence[tuple[str, str]],
    *,
    dtype: str,
    identity: dict[str, Any],
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write one shard's embeddings atomically (temp file in the same folder, then rename)."""
    h5py = _h5py()
    if len(sample_ids) + len(skipped) != want.n_rows:
        raise ValueError(
            f"{path}: {len(sample_ids)} embedded + {len(skipped)} skipped "
            f"!= {want.n_rows} planned rows"
        )
    matrix = np.ascontiguousarray(embeddings, dtype=np.dtype(dtype))
    strings = h5py.string_dtype(encoding="utf-8")
    with atomic.atomic_path(path) as tmp, h5py.File(tmp, "w", locking=False) as h5:
        rows, dim = matrix.shape if matrix.ndim == 2 else (0, 0)
        chunks = (max(1, min(CHUNK_ROWS, rows)), dim) if rows and dim else None
        h5.create_dataset("embedding", data=matrix, chunks=chunks)
        if os.environ.get(atomic.PAUSE_ENV):
            h5.flush()
            atomic.pause_point(path)  # a kill test's known point: embeddings written, ids not
        h5.create_dataset("sample_id", data=np.array(list(sample_ids), dtype=object), dtype=strings)
        h5.create_dataset(
            "skipped_id", data=np.array([s for s, _ in skipped], dtype=object), dtype=strings
        )
        h5.create_dataset(
            "skipped_reason", data=np.array([r for _, r in skipped], dtype=object), dtype=strings
        )
        attrs = h5.attrs
        attrs["format_version"] = FORMAT_VERSION
        attrs["encoder_key"] = want.encoder_key
        attrs["encoder_identity"] = json.dumps(identity, sort_keys=True)
        attrs["provenance"] = json.dumps(provenance or {}, sort_keys=True)
        attrs["variant"] = want.variant
        attrs["shard"] = want.shard
        attrs["n_rows"] = want.n_rows
        attrs["n_embedded"] = len(sample_ids)
        attrs["n_skipped"] = len(skipped)
        attrs["dataset_fingerprint"] = want.fingerprint
        attrs["dtype"] = dtype
    return path


def problem(path: Path, want: Expected) -> str | None:
    """Why the file at `path` does not hold `want` (None when it does)."""
    if not path.is_file():
        return "missing"
    h5py = _h5py()
    try:
        with h5py.File(path, "r", locking=False) as h5:
            attrs = dict(h5.attrs)
            rows = h5["embedding"].shape[0]
    except (OSError, KeyError) as exc:
        return f"unreadable ({exc})"
    checks = {
        "format_version": FORMAT_VERSION,
        "encoder_key": want.encoder_key,
        "variant": want.variant,
        "shard": want.shard,
        "n_rows": want.n_rows,
        "dataset_fingerprint": want.fingerprint,
    }
    for key, value in checks.items():
        if attrs.get(key) != value:
            return f"{key} is {attrs.get(key)!r}, expected {value!r}"
    if (
        int(attrs.get("n_embedded", -1)) != rows
        or rows + int(attrs.get("n_skipped", -1)) != want.n_rows
    ):
        return (
            f"holds {rows} rows + {attrs.get('n_skipped')} skipped, expected {want.n_rows} in all"
        )
    return None


def is_complete(run: Run, encoder_key: str, variant: str, shard: int) -> bool:
    path = shard_file(run, encoder_key, variant, shard)
    return problem(path, expected(run, encoder_key, variant, shard)) is None


@dataclass
class ShardEmbeddings:
    shard: int
    sample_ids: np.ndarray  # str, rows in the file's order
    embeddings: np.ndarray  # (rows, dim), float16 or float32 as stored
    skipped: list[tuple[str, str]]


def read_shard(run: Run, encoder_key: str, variant: str, shard: int) -> ShardEmbeddings:
    """Read one shard after checking it; raise `IncompleteEmbeddings` naming the problem."""
    path = shard_file(run, encoder_key, variant, shard)
    why = problem(path, expected(run, encoder_key, variant, shard))
    if why is not None:
        raise IncompleteEmbeddings(encoder_key, variant, [(shard, path, why)])
    h5py = _h5py()
    with h5py.File(path, "r", locking=False) as h5:
        ids = h5["sample_id"].asstr()[...]
        matrix = h5["embedding"][...]
        skipped = list(
            zip(h5["skipped_id"].asstr()[...], h5["skipped_reason"].asstr()[...], strict=True)
        )
    return ShardEmbeddings(shard, np.asarray(ids, dtype=object), matrix, skipped)


def skipped_rows(run: Run, encoder_key: str, variant: str, shard: int) -> list[tuple[str, str]]:
    """(sample id, reason) of the images a complete shard file could not embed ([] otherwise)."""
    path = shard_file(run, encoder_key, variant, shard)
    if problem(path, expected(run, encoder_key, variant, shard)) is not None:
        return []
    h5py = _h5py()
    with h5py.File(path, "r", locking=False) as h5:
        return list(
            zip(h5["skipped_id"].asstr()[...], h5["skipped_reason"].asstr()[...], strict=True)
        )


class IncompleteEmbeddings(RuntimeError):
    """Embedding shards that are missing or do not match the run; reading them would be wrong."""

    def __init__(self, encoder_key: str, variant: str, problems: list[tuple[int, Path, str]]):
        self.problems = problems
        lines = [f"embeddings {encoder_key}/{variant}: {len(problems)} shard(s) not usable:"]
        lines += [f"  shard {s}: {p} ({why})" for s, p, why in problems[:10]]
        lines.append("fix: run the embed (or perturb) stage again; it redoes only these shards")
        super().__init__("\n".join(lines))


def check_all(
    run: Run, encoder_key: str, variant: str, shards: Sequence[int] | None = None
) -> None:
    """Raise `IncompleteEmbeddings` unless every shard file is present and matches, and all were
    computed in one precision (precision "auto" is bfloat16 on a GPU and float32 on a CPU: a merged
    view must not mix the two)."""
    shards = range(run.n_shards) if shards is None else shards
    problems = []
    dtypes: dict[str, list[int]] = {}
    for shard in shards:
        path = shard_file(run, encoder_key, variant, shard)
        why = problem(path, expected(run, encoder_key, variant, shard))
        if why is not None:
            problems.append((shard, path, why))
        else:
            dtypes.setdefault(compute_dtype(path), []).append(shard)
    if len(dtypes) > 1:
        rare, shards_of_rare = min(dtypes.items(), key=lambda kv: len(kv[1]))
        others = ", ".join(d for d in dtypes if d != rare)
        for shard in shards_of_rare:
            path = shard_file(run, encoder_key, variant, shard)
            problems.append((shard, path, f"computed in {rare}, other shards in {others}"))
    if problems:
        raise IncompleteEmbeddings(encoder_key, variant, problems)


def compute_dtype(path: Path) -> str:
    h5py = _h5py()
    with h5py.File(path, "r", locking=False) as h5:
        facts = json.loads(h5.attrs.get("provenance", "{}"))
    return str(facts.get("compute_dtype", "unknown"))


def iter_shards(
    run: Run, encoder_key: str, variant: str, shards: Sequence[int] | None = None
) -> Iterator[ShardEmbeddings]:
    """Every shard in order, after checking all of them first (no partial merged view)."""
    shards = list(range(run.n_shards) if shards is None else shards)
    check_all(run, encoder_key, variant, shards)
    for shard in shards:
        yield read_shard(run, encoder_key, variant, shard)


def load_all(
    run: Run,
    encoder_key: str,
    variant: str,
    *,
    rows: Sequence[str] | None = None,
    dtype: str = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """The merged view: (sample_ids, embeddings) over all shards, optionally only `rows`' ids."""
    wanted = set(rows) if rows is not None else None
    ids: list[np.ndarray] = []
    mats: list[np.ndarray] = []
    for part in iter_shards(run, encoder_key, variant):
        if wanted is not None:
            keep = np.fromiter((s in wanted for s in part.sample_ids), bool, len(part.sample_ids))
            ids.append(part.sample_ids[keep])
            mats.append(part.embeddings[keep].astype(dtype, copy=False))
        else:
            ids.append(part.sample_ids)
            mats.append(part.embeddings.astype(dtype, copy=False))
    if not mats:
        return np.array([], dtype=object), np.zeros((0, 0), dtype=dtype)
    return np.concatenate(ids), np.concatenate(mats)
