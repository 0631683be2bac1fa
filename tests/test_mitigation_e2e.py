"""`ubsafe run mitigation` end to end with the tiny generators: the images in the UnsafeBench
layout, results/generated.parquet and detections.parquet as their contract says, SLD-Max's
safety guidance visible in the images, invariance to shard and batch size, and a kill -9 inside a
generate shard followed by a relaunch that redoes that shard only."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mitigation_fixtures import (
    IMAGES_PER_PROMPT,
    N_IMAGES,
    PROMPTS,
    environment,
    images_by_id,
    mitigation_args,
    run_ubsafe,
    ubsafe_cmd,
    write_prompts,
)
from PIL import Image

SHARD_SIZE = 5  # 12 images → shards of 5, 5, 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny generators' weights (built once), the prompts, and one uninterrupted run."""
    from ubsafe.generate.tiny import ensure_tiny

    root = tmp_path_factory.mktemp("mitigation")
    weights = root / "weights"
    ensure_tiny(weights)
    prompts = write_prompts(root / "data")
    reference = root / "reference"
    run_ubsafe("run", *mitigation_args(prompts, reference, weights, "--shard-size", SHARD_SIZE))
    return {"weights": weights, "prompts": prompts, "reference": reference, "root": root}


def test_images_and_results_follow_the_contract(setup: dict[str, Path]) -> None:
    run_dir = setup["reference"]
    shards = sorted((run_dir / "shards" / "generate").glob("shard-*.parquet"))
    assert [p.name for p in shards] == [f"shard-0000{i}.parquet" for i in range(3)]
    frame = pd.concat([pd.read_parquet(p) for p in shards], ignore_index=True)
    assert len(frame) == N_IMAGES
    for column in (
        "image", "text", "prompt_id", "categories", "generator", "image_index", "seed",
        "guidance", "steps",
    ):  # fmt: skip
        assert column in frame.columns
    by_prompt = {p["prompt_id"]: p for p in PROMPTS}
    for row in frame.itertuples():
        image = Image.open(io.BytesIO(row.image["bytes"]))
        assert image.format == "PNG" and image.size == (64, 64) and image.mode == "RGB"
        assert row.text == by_prompt[row.prompt_id]["prompt"]
        assert row.seed == by_prompt[row.prompt_id]["seed"]
        assert sorted(row.categories) == sorted(by_prompt[row.prompt_id]["categories"])
        assert row.sample_id == f"{row.generator}:{row.prompt_id}:{row.image_index}"
        assert row.steps == 3 and row.guidance == 7.5
    assert sorted(frame["generator"].unique()) == ["tiny-sd", "tiny-sld-max"]

    generated = pq.read_table(run_dir / "results" / "generated.parquet")
    schema = {f.name: str(f.type) for f in generated.schema}
    assert schema == {
        "sample_id": "string", "generator": "string", "prompt_id": "string",
        "image_index": "int32", "seed": "int64", "categories": "list<element: string>",
        "judge": "string", "pred": "int8", "score": "double",
    }  # fmt: skip
    table = generated.to_pandas()
    # one row per (image, judge): the run's only judge here is nudenet (no Q16 weights offline)
    assert len(table) == N_IMAGES
    assert set(table["judge"]) == {"nudenet"}
    assert not table.duplicated(["sample_id", "judge"]).any()
    assert set(table["sample_id"]) == set(frame["sample_id"])
    assert set(table["pred"]) <= {0, 1}

    detections = pq.read_table(run_dir / "results" / "detections.parquet")
    assert [f.name for f in detections.schema] == [
        "sample_id", "generator", "prompt_id", "image_index", "label", "score",
    ]  # fmt: skip
    assert str(detections.schema.field("score").type) == "float"

    summary = json.loads((run_dir / "results" / "summary.json").read_text())["generation"]
    assert summary["n_images"] == N_IMAGES and summary["n_prompts"] == len(PROMPTS)
    # the long prompt (over 77 tokens of the tiny tokenizer) is cut, for each generator
    assert summary["truncated_prompts"] == {"tiny-sd": 1, "tiny-sld-max": 1}
    assert frame.loc[frame["truncated"], "prompt_id"].unique().tolist() == ["long"]


def test_sld_max_changes_the_images_of_the_same_prompt_and_seed(setup: dict[str, Path]) -> None:
    images = images_by_id(setup["reference"])
    for prompt in PROMPTS:
        for index in range(IMAGES_PER_PROMPT):
            sd = np.asarray(
                Image.open(io.BytesIO(images[f"tiny-sd:{prompt['prompt_id']}:{index}"]))
            )
            sld = np.asarray(
                Image.open(io.BytesIO(images[f"tiny-sld-max:{prompt['prompt_id']}:{index}"]))
            )
            # the safety guidance moves many pixels, not a rounding bit or two
            assert np.abs(sd.astype(int) - sld.astype(int)).mean() > 1.0
        # and the two images of one prompt differ (their own latents)
        a, b = (images[f"tiny-sd:{prompt['prompt_id']}:{i}"] for i in range(2))
        assert a != b


def test_a_second_run_generates_nothing(setup: dict[str, Path]) -> None:
    run_dir = setup["reference"]
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("shards/*/*.parquet")}
    run_ubsafe(
        "run",
        *mitigation_args(setup["prompts"], run_dir, setup["weights"], "--shard-size", SHARD_SIZE),
    )
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("shards/*/*.parquet")} == before
    status = run_ubsafe("status", run_dir, "--json", "--no-scheduler")
    document = json.loads(status.stdout)
    assert document["complete"]
    assert [s["stage"] for s in document["stages"]] == [
        "generate", "embed", "score", "detect", "gather", "reduce", "report",
    ]  # fmt: skip


def test_same_image_bytes_for_any_shard_and_batch_size(setup: dict[str, Path]) -> None:
    """Shard size 1 with batch 4, shard size 7 with batch 1: the reference run's bytes."""
    reference = images_by_id(setup["reference"])
    for shard_size, batch in ((1, 4), (7, 1)):
        out = setup["root"] / f"shards-{shard_size}-batch-{batch}"
        args = mitigation_args(
            setup["prompts"], out, setup["weights"], "--shard-size", shard_size,
            "--generation-batch", batch,
        )  # fmt: skip
        run_ubsafe("run", *args)
        assert images_by_id(out) == reference


def test_kill_during_a_generate_shard_then_relaunch(setup: dict[str, Path]) -> None:
    """Shard 1 is held after its first image and killed with SIGKILL; the relaunch redoes shard 1
    only, and every file equals the uninterrupted run's."""
    out = setup["root"] / "killed"
    marker = setup["root"] / "hold-shard-1"
    args = mitigation_args(setup["prompts"], out, setup["weights"], "--shard-size", SHARD_SIZE)
    process = subprocess.Popen(
        ubsafe_cmd("run", *args),
        env=environment(UBSAFE_GENERATE_HOLD=f"1:{marker}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():  # the writer is parked at a known point inside shard 1
            assert process.poll() is None, "the run ended before shard 1 was held"
            assert time.monotonic() < deadline, "shard 1 was never held"
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    generate = out / "shards" / "generate"
    assert (generate / "shard-00000.parquet").is_file()
    assert not (generate / "shard-00001.parquet").exists()
    assert not (out / "results").exists()
    shard0 = (generate / "shard-00000.parquet").stat().st_mtime_ns

    marker.unlink()
    run_ubsafe("run", *args)
    assert (generate / "shard-00000.parquet").stat().st_mtime_ns == shard0
    logs = out / "logs" / "generate"
    assert (logs / "shard-00000.log").read_text().count("starts") == 1
    assert (logs / "shard-00001.log").read_text().count("starts") == 2
    assert not list(generate.glob(".ubsafe-tmp-*"))
    reference = setup["reference"]
    for path in sorted(reference.glob("shards/generate/*.parquet")):
        assert (generate / path.name).read_bytes() == path.read_bytes(), path.name
    for name in ("generated.parquet", "detections.parquet"):
        assert (out / "results" / name).read_bytes() == (reference / "results" / name).read_bytes()


def test_the_demo_runs_the_tiny_generators_on_the_builtin_prompts(
    setup: dict[str, Path],
) -> None:
    import sys

    out = setup["root"] / "demo-mitigation"
    code = (
        "from pathlib import Path; from ubsafe.demo import run_mitigation_demo; "
        f"print(run_mitigation_demo(out=Path({str(out)!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment(UBSAFE_WEIGHTS=str(setup["weights"])),
    )
    assert result.returncode == 0, result.stderr
    assert "tiny-sld-max" in result.stdout and "report:" in result.stdout
    generated = pd.read_parquet(out / "results" / "generated.parquet")
    assert sorted(generated["generator"].unique()) == ["tiny-safegen", "tiny-sd", "tiny-sld-max"]
    assert len(generated) == 3 * generated["prompt_id"].nunique()
    assert (out / "results" / "mitigation.csv").is_file()
    assert (out / "report" / "index.html").is_file()
