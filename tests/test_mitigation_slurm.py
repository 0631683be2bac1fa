"""`ubsafe submit mitigation` on the development Slurm cluster gives the same generated images and
the same results/generated.parquet (and detections.parquet) as `ubsafe run mitigation` here."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitigation_fixtures import images_by_id, mitigation_args, run_ubsafe, write_prompts
from slurm_fixtures import (
    SLURM,
    cluster,  # noqa: F401  (fixture)
    status_document,
    ubsafe,
    wait_for_run,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("cluster")]


def test_submit_mitigation_equals_run_mitigation(tmp_path: Path) -> None:
    from ubsafe.generate.tiny import ensure_tiny

    weights = tmp_path / "weights"
    ensure_tiny(weights)
    prompts = write_prompts(tmp_path / "data")
    local = tmp_path / "local"
    run_ubsafe("run", *mitigation_args(prompts, local, weights, "--shard-size", 5))

    submitted = tmp_path / "submitted"
    out = ubsafe(
        "submit", *mitigation_args(prompts, submitted, weights, "--shard-size", 5), *SLURM,
        "--cpus-per-task", 1,
    ).output  # fmt: skip
    assert "generate" in out and "gather" in out
    wait_for_run(submitted, timeout=900)
    document = status_document(submitted, expect=0)
    assert [s["stage"] for s in document["stages"]][:5] == [
        "generate", "embed", "score", "detect", "gather",
    ]  # fmt: skip
    assert images_by_id(submitted) == images_by_id(local)
    for name in ("generated.parquet", "detections.parquet"):
        got = (submitted / "results" / name).read_bytes()
        assert got == (local / "results" / name).read_bytes(), name
