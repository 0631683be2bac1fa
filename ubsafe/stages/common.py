"""What several stages share: models loaded once per process, and a shard's decoded images.

Decoding runs in a pool while the caller computes, so I/O and compute overlap inside a shard: a
thread pool by default (PIL releases the GIL while it decodes and resizes), or with
`decode_pool = "processes"` worker processes of one torch thread each, for when the GIL, or
threads contending for torch's own pool, is the limit (the encoder's inputs only: `iter_inputs`).
Both run the same function on the same bytes, so the pixels are identical; a converter that
cannot be pickled falls back to threads.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import logging
import multiprocessing
import pickle
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ubsafe.data.images import DecodeError, decode_image

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from ubsafe.rundir import Run

log = logging.getLogger(__name__)
T = TypeVar("T")


@functools.lru_cache(maxsize=4)
def encoder(
    key: str,
    weights_dir: str,
    device: str,
    batch_size: int,
    precision: str,
    micro_batch: int | None,
) -> Any:
    """The encoder, loaded once per process (a task that runs many shards reuses it)."""
    from ubsafe.encoders import load_encoder

    return load_encoder(
        key,
        weights_dir,
        device=device,
        batch_size=batch_size,
        precision=precision,
        micro_batch=micro_batch,
    )


def run_encoder(run: Run, key: str) -> Any:
    c = run.config
    return encoder(key, c.weights_dir, c.device, c.batch_size, c.precision, c.micro_batch)


@functools.lru_cache(maxsize=16)
def _classifier(name: str, weights_dir: str, device: str, fitted_dir: str, options: str) -> Any:
    import json
    from pathlib import Path

    from ubsafe.classifiers import load_classifier

    return load_classifier(
        name, weights_dir, device=device, fitted_dir=Path(fitted_dir), options=json.loads(options)
    )


def device_of(run: Run) -> str:
    if run.config.device != "auto":
        return run.config.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_classifier(run: Run, name: str, *, device: str | None = None) -> Any:
    """The classifier with the run's option overrides, loaded once per process.

    Embedding rules run on the CPU in float64 whatever the device, so they load on the CPU unless
    a caller needs the surrogate elsewhere (the attack stage passes the encoder's device); image
    classifiers and VLM judges use the run's device.
    """
    import json

    from ubsafe.classifiers import get_entry

    if device is None:
        device = "cpu" if get_entry(name).input == "embedding" else device_of(run)
    options = json.dumps(run.config.classifier_options.get(name, {}), sort_keys=True)
    return _classifier(name, run.config.weights_dir, device, str(run.fitted_dir), options)


@dataclass
class Decoded:
    """A shard's samples after decoding: the converted items in plan order, and the skipped ones."""

    sample_ids: list[str]
    items: list[Any]
    skipped: list[tuple[str, str]]


def _decode_one(
    entry: tuple[str, bytes | None, str], convert: Callable[[Image.Image], T], grey: bool = False
) -> tuple[str, T | None, str]:
    sample_id, data, reason = entry
    if data is None:
        return sample_id, None, reason
    try:
        return sample_id, convert(decode_image(data, grey=grey)), ""
    except DecodeError as exc:
        return sample_id, None, str(exc)


def image_bytes(run: Run, rows: pd.DataFrame) -> Iterator[tuple[str, bytes | None, str]]:
    """(sample_id, bytes or None, reason) of `rows` in order, read under the run's limits (the
    folders images may come from, the largest file read)."""
    from ubsafe.data.files import ReadLimits
    from ubsafe.data.locate import iter_image_bytes
    from ubsafe.rundir import dataset_root

    return iter_image_bytes(dataset_root(run), rows, limits=ReadLimits.from_config(run.config))


def iter_decoded(
    run: Run,
    rows: pd.DataFrame,
    convert: Callable[[Image.Image], T],
    *,
    workers: int | None = None,
    grey: bool = False,
    pool: str = "threads",
) -> Iterator[tuple[str, T | None, str]]:
    """Yield (sample_id, converted image or None, skip reason) in `rows` order; decode ahead.

    `convert` receives RGB images, or with `grey` also "L" ones for greyscale sources. `pool` is
    `threads` or `processes` (`convert` must then pickle; see the module notes).
    """
    workers = run.config.decode_workers if workers is None else workers
    entries = image_bytes(run, rows)
    if workers <= 0:
        for entry in entries:
            yield _decode_one(entry, convert, grey)
        return
    scope, task, receive = _decode_executor(pool, workers, convert, grey)
    # A bounded window ahead (Executor.map would read every image of the shard at once): memory
    # holds at most a few encoded images and their decodes, whatever the shard size.
    window: collections.deque[Future[tuple[str, Any, str]]] = collections.deque()
    with scope as executor:
        try:
            for entry in entries:
                window.append(executor.submit(task, entry))
                if len(window) > 2 * workers:
                    yield receive(window.popleft().result())
            while window:
                yield receive(window.popleft().result())
        finally:  # if the caller stopped early, what was queued ahead is not decoded
            for future in window:
                future.cancel()


Task = Callable[[tuple[str, bytes | None, str]], tuple[str, Any, str]]


def _decode_executor(
    pool: str, workers: int, convert: Callable[[Image.Image], T], grey: bool
) -> tuple[contextlib.AbstractContextManager[Executor], Task, Callable[[Any], Any]]:
    """The pool to decode in (a context that ends it after the shard, or for worker processes
    keeps it for the next shard), the task to submit to it, and what turns a result back into
    `convert`'s output."""
    if pool == "processes":
        try:
            payload = pickle.dumps((convert, grey))
        except Exception as exc:
            log.warning("decoding in threads: the image converter cannot be pickled (%s)", exc)
        else:
            pool_scope = contextlib.nullcontext(_process_pool(workers, payload))
            return pool_scope, _decode_in_worker, _received
    elif pool != "threads":
        raise ValueError(f"decode_pool {pool!r}: use threads or processes")
    threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    return threads, functools.partial(_decode_one, convert=convert, grey=grey), _same


def _same(result: Any) -> Any:
    return result


#: The worker processes of the last converter used (one pool at a time: a new converter ends
#: the old pool, so idle workers do not pile up across stages).
_PROCESS_POOL: dict[bytes, ProcessPoolExecutor] = {}


def _process_pool(workers: int, payload: bytes) -> ProcessPoolExecutor:
    """Worker processes for one converter, started once and kept for later shards (starting them
    imports torch: seconds). concurrent.futures joins them at exit."""
    key = workers.to_bytes(4, "little") + hashlib.sha256(payload).digest()
    found = _PROCESS_POOL.get(key)
    if found is None or getattr(found, "_broken", False):  # a worker died: start anew
        shutdown_decode_pools()
        # spawn, not fork: the parent's torch and OpenMP threads do not survive a fork
        found = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_decode_worker,
            initargs=(payload,),
        )
        _PROCESS_POOL[key] = found
    return found


def shutdown_decode_pools() -> None:
    """End the decode worker processes, if any (the next shard that wants them starts new ones)."""
    while _PROCESS_POOL:
        _, executor = _PROCESS_POOL.popitem()
        executor.shutdown(wait=True, cancel_futures=True)


_WORKER: dict[str, Any] = {}


def _start_decode_worker(payload: bytes) -> None:
    """A decode worker process: one torch thread (the pool is the parallelism), the converter.
    Ctrl-C is the parent's to handle: the workers ignore it and end with the pool."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    convert, grey = pickle.loads(payload)
    _WORKER.update(convert=convert, grey=grey)


def _decode_in_worker(entry: tuple[str, bytes | None, str]) -> tuple[str, Any, str]:
    """Decode in a worker; a tensor travels back as a NumPy array, pickled by value (torch would
    pass it through shared memory: one file descriptor held per image until it is freed)."""
    import torch

    sample_id, item, reason = _decode_one(entry, _WORKER["convert"], _WORKER["grey"])
    if isinstance(item, torch.Tensor):
        return sample_id, ("tensor", item.numpy()), reason
    return sample_id, item, reason


def _received(result: tuple[str, Any, str]) -> tuple[str, Any, str]:
    sample_id, item, reason = result
    if isinstance(item, tuple) and len(item) == 2 and item[0] == "tensor":
        import torch

        return sample_id, torch.from_numpy(item[1]), reason
    return sample_id, item, reason


def decode_path(run: Run) -> str:
    """`gpu` when the run pins a CUDA device (see `ubsafe.stages.decode_gpu`), else `cpu`."""
    from ubsafe.stages import decode_gpu

    return "gpu" if decode_gpu.wanted(run.config.device) else "cpu"


def iter_inputs(
    run: Run, rows: pd.DataFrame, encoder: Any, *, path: str | None = None
) -> Iterator[tuple[str, Any, str]]:
    """Encoder inputs of `rows` in order, or skip reasons, through the run's decode path.

    The embed and perturb stages both read their pixels here, so clean and perturbed embeddings
    of a run always come from the same decode and resize.
    """
    path = decode_path(run) if path is None else path
    if path == "cpu":
        # the encoder resizes before it needs channels: greyscale stays one channel until then
        convert = encoder.input_converter
        yield from iter_decoded(run, rows, convert, grey=True, pool=run.config.decode_pool)
        return
    from ubsafe.stages import decode_gpu

    entries = image_bytes(run, rows)
    workers = max(1, run.config.decode_workers)
    yield from decode_gpu.iter_inputs(entries, encoder, encoder.device, workers=workers)


def decode_inputs(run: Run, rows: pd.DataFrame, encoder: Any) -> Decoded:
    """`iter_inputs` collected: a shard's encoder inputs and its skipped samples."""
    return _collect(iter_inputs(run, rows, encoder))


def decode_shard(run: Run, rows: pd.DataFrame, convert: Callable[[Image.Image], T]) -> Decoded:
    return _collect(iter_decoded(run, rows, convert))


def _collect(stream: Iterator[tuple[str, Any, str]]) -> Decoded:
    out = Decoded([], [], [])
    for sample_id, item, reason in stream:
        if item is None:
            out.skipped.append((sample_id, reason))
        else:
            out.sample_ids.append(sample_id)
            out.items.append(item)
    return out
