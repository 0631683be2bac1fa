"""The mitigation tables of a run directory: written by the reduce's writer from
results/generated.parquet, detections and the embedding cache; CLIP score against numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mitigation_synthetic import make_mitigation_run

from ubsafe.fidelity import FID_NOTE, cached_image_embeddings, clip_scores
from ubsafe.mitigation import MITIGATION_TABLES, write_mitigation
from ubsafe.report.load import load_results
from ubsafe.results import result_file


def test_writer_writes_every_table_and_clip_score_matches_numpy(tmp_path) -> None:
    from ubsafe.encoders.openclip import encode_texts
    from ubsafe.encoders.registry import get_entry

    run = make_mitigation_run(tmp_path / "run")
    written = write_mitigation(run)
    assert [p.name for p in written] == [f"{name}.csv" for name in MITIGATION_TABLES]
    tables = {name: pd.read_csv(run.results_dir / f"{name}.csv") for name in MITIGATION_TABLES}
    loaded = load_results(run.root)  # what the report reads, checked against the schemas
    for name, frame in tables.items():
        assert tuple(frame.columns) == result_file(f"{name}.csv").names
        assert result_file(f"{name}.csv").reported and loaded.get(name) is not None
        assert len(frame), name
    assert set(tables["mitigation"]["generator"]) == {"sd-1.4", "sld-max", "safegen"}
    fidelity = tables["fidelity"].set_index("generator")
    # CLIP score from scratch: benign images, their cached embeddings, their prompts' texts.
    generated = pd.read_parquet(run.results_dir / "generated.parquet")
    images = generated.drop_duplicates("sample_id")
    benign = images[images["categories"].apply(len) == 0]
    cached = cached_image_embeddings(run, set(benign["sample_id"]))
    assert len(cached) == len(benign)
    prompts = sorted(benign["prompt_id"].unique())
    text = encode_texts(
        get_entry("tiny"),
        run.config.weights_dir,
        [benign.set_index("prompt_id").loc[p, "prompt"].iloc[0] for p in prompts],
    )
    text_of = dict(zip(prompts, text, strict=True))
    for name, rows in benign.groupby("generator"):
        a = np.stack([cached[s] for s in rows["sample_id"]])
        b = np.stack([text_of[p] for p in rows["prompt_id"]]).astype(np.float64)
        cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert fidelity.loc[name, "clip_score"] == pytest.approx(100 * cos.mean(), abs=1e-4)
        assert fidelity.loc[name, "n_images"] == len(rows)
    assert fidelity.loc["sd-1.4", "clip_score"] > fidelity.loc["sld-max", "clip_score"]
    assert fidelity.loc["sld-max", "clip_diff_hi"] < 0 < fidelity.loc["sd-1.4", "clip_score"]
    assert np.isnan(fidelity.loc["sd-1.4", "clip_diff"])
    assert fidelity["fid"].isna().all() and (fidelity["note"].str.contains("Inception")).all()
    assert FID_NOTE in fidelity["note"].iloc[0]


def test_clip_scores_is_one_hundred_times_the_cosine() -> None:
    a = np.array([[1.0, 0.0], [3.0, 4.0]])
    b = np.array([[2.0, 0.0], [4.0, -3.0]])
    assert clip_scores(a, b) == pytest.approx([100.0, 0.0])


def test_no_generated_images_writes_nothing(tmp_path) -> None:
    run = make_mitigation_run(tmp_path / "run", n_prompts=5)
    (run.results_dir / "generated.parquet").unlink()
    assert write_mitigation(run) == []


def test_fidelity_without_cached_embeddings_is_a_note(tmp_path) -> None:
    import shutil

    run = make_mitigation_run(tmp_path / "run", n_prompts=12)
    shutil.rmtree(run.config.cache_root)
    write_mitigation(run)
    fidelity = pd.read_csv(run.results_dir / "fidelity.csv")
    assert fidelity["clip_score"].isna().all()
    assert fidelity["note"].str.contains("no cached image embeddings").all()


def test_text_build_has_the_image_encoders_vision_tower() -> None:
    """CLIP score pairs cached image embeddings with the text tower of the same weights: the
    model built for text holds exactly the vision tower the image encoder uses."""
    import torch

    from ubsafe.encoders.openclip import build_open_clip, create_model
    from ubsafe.encoders.registry import get_entry

    entry = get_entry("tiny")
    whole = create_model(entry, "/nonexistent", text=True).visual.state_dict()
    vision = build_open_clip(entry, "/nonexistent")[0].state_dict()
    assert whole.keys() == vision.keys()
    assert all(torch.equal(whole[k], vision[k]) for k in vision)
