"""Robustness runs with judges their registry entries say cannot be attacked: gpt4v queried on a
local OpenAI-compatible server, and perspective-llava with a tiny adapter. Both complete, their
perturbation rows reach robustness.csv, and "not attackable" is said instead of raised."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_vlm_openai import FakeAPI
from vlm_stage_fixtures import GPT4V_QUERY, run_stages, start_run, write_dataset

from ubsafe.testing import tiny

pytest.importorskip("transformers")

ROBUSTNESS = {
    "target": "robustness",
    "perturbations": "brightness",
    "severities": (3,),
    "attacks": ("fgsm", "pgd"),
    "attack_eps": (8.0,),
    "attack_steps": 2,
    "bootstrap": 200,
}


def check_not_attackable(run, name: str) -> pd.DataFrame:
    results = run.root / "results"
    table = pd.read_csv(results / "robustness.csv")
    mine = table[table["classifier"] == name]
    assert set(mine["perturbation"]) == {"brightness"} and set(mine["family"]) != {"attack"}
    assert (mine["n_images"] > 0).all() and set(mine["source"]) == {"real", "ai", "all"}
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    assert name in summary["not_attackable"]
    assert any(note.startswith(f"not attackable: {name}") for note in summary["notes"])
    from ubsafe.report import render_report

    render_report([run.root])
    report = (run.root / "report" / "report.md").read_text(encoding="utf-8")
    assert f"not attackable — {name}" in report
    return mine


def test_gpt4v_in_query_mode_completes_a_robustness_run(tmp_path: Path, monkeypatch) -> None:
    dataset = write_dataset(tmp_path / "data", 4, 6)
    with FakeAPI() as api:
        monkeypatch.setenv("OPENAI_BASE_URL", api.url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        run = start_run(
            tmp_path / "run",
            dataset,
            tmp_path / "weights",  # nothing: the rules need no converter files
            **GPT4V_QUERY,
            **ROBUSTNESS,
        )
        assert run_stages(run, "robustness", until="reduce") == {}
        # clean: 3 prompts per image; perturbed: P0 once per distinct perturbed image
        assert len(api.requests) > 3 * len(run.plan)
    mine = check_not_attackable(run, "gpt4v")
    # every answer is "The image is unsafe.": clean and perturbed decisions agree
    assert (mine["flip_rate"] == 0).all()


def test_perspective_llava_completes_a_robustness_run(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    weights = tmp_path / "weights"
    tiny.save_tiny_llava(weights, image_size=32, patch=16)
    dataset = write_dataset(tmp_path / "data", 8, 6)
    run = start_run(
        tmp_path / "run",
        dataset,
        weights,
        classifiers="perspective-llava",
        perspective_lora={"r": 2, "alpha": 4, "batch_size": 2, "grad_accum": 1, "max_steps": 1},
        **ROBUSTNESS,
    )
    assert run_stages(run, "robustness", until="reduce") == {}
    check_not_attackable(run, "perspective-llava")
