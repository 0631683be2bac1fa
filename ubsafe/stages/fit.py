"""Stage `fit`: train the run's fitted classifiers (probes, fast PerspectiveVision) on train rows.

One step across all shards: it reads the cached clean embeddings of the train rows (every shard file
checked first) and writes `fitted/<name>.safetensors`, then `fitted/<name>.json` recording what it
was fitted on — the JSON is the completion marker, written last. Each classifier's module fits it
(`fit_entry(entry, embeddings, labels, seed=, encoder=, categories=)`) with its registry options as
the run's `classifier_options` override them.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ubsafe import atomic
from ubsafe import embeddings as store
from ubsafe.stages import Needs

if TYPE_CHECKING:
    from pathlib import Path

    from ubsafe.rundir import Run

NAME = "fit"
SHARDED = False
NEEDS = Needs(
    inputs=("plan.parquet", "<cache>/.../clean/shard-*.h5 (train rows)"),
    outputs=("fitted/<classifier>.safetensors", "fitted/<classifier>.json"),
)
log = logging.getLogger(__name__)


def fitted_names(run: Run) -> list[str]:
    from ubsafe.classifiers import get_entry

    return [name for name in run.config.classifiers if get_entry(name).fitted]


def applies(run: Run) -> bool:
    return bool(fitted_names(run))


def marker(run: Run, name: str) -> Path:
    return run.fitted_dir / f"{name}.json"


def expected_record(run: Run, name: str) -> dict[str, Any]:
    return {
        "classifier": name,
        "config_hash": run.config.config_hash(),
        "fingerprint": run.dataset_fingerprint,
    }


def _done(run: Run, name: str) -> bool:
    try:
        record = json.loads(marker(run, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    want = expected_record(run, name)
    return (
        all(record.get(k) == v for k, v in want.items())
        and (run.fitted_dir / f"{name}.safetensors").is_file()
    )


def is_done(run: Run, shard: int) -> bool:
    return all(_done(run, name) for name in fitted_names(run))


def training_rows(run: Run, name: str) -> Any:
    from ubsafe.classifiers import get_entry

    entry = get_entry(name)
    plan = run.plan
    kinds = tuple(getattr(entry, "train_sources", ("real", "ai")))
    return plan[(plan["split"] == "train") & plan["source_kind"].isin(kinds)]


def configured_entry(run: Run, name: str) -> Any:
    """The registry entry of `name` with the run's option overrides applied."""
    import dataclasses
    from types import MappingProxyType

    from ubsafe.classifiers import get_entry, resolve_options

    entry = get_entry(name)
    options = resolve_options(entry, run.config.classifier_options.get(name))
    return dataclasses.replace(entry, options=MappingProxyType(options))


def run_shard(run: Run, shard: int) -> None:
    import importlib

    from ubsafe.classifiers import fitted_path
    from ubsafe.stages.embed import cache_key

    for name in fitted_names(run):
        if _done(run, name):
            continue
        entry = configured_entry(run, name)
        rows = training_rows(run, name).set_index("sample_id").sort_index()
        ids, matrix = store.load_all(
            run, cache_key(run, run.config.encoder), "clean", rows=list(rows.index)
        )
        order = np.argsort(ids, kind="stable")
        ids, matrix = ids[order], matrix[order]
        labels = rows.loc[ids, "label"].to_numpy(np.int8)
        categories = rows.loc[ids, "category"].to_numpy(object)
        start = time.perf_counter()
        module = importlib.import_module(entry.module)
        fitted = module.fit_entry(
            entry,
            matrix,
            labels,
            seed=run.config.seed,
            encoder=run.config.encoder,
            categories=categories,
        )
        fitted.save(fitted_path(run.fitted_dir, name))
        record = {
            **expected_record(run, name),
            "n_train": len(ids),
            "n_unsafe": int(labels.sum()),
            "seconds": round(time.perf_counter() - start, 3),
        }
        atomic.write_text(marker(run, name), json.dumps(record, indent=2) + "\n")
        log.info(
            "fitted %s on %d train rows (%d unsafe) in %.2f s",
            name,
            len(ids),
            labels.sum(),
            record["seconds"],
        )
