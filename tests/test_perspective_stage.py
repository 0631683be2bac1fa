"""PerspectiveVision (the paper's) through the pipeline: the finetune stage trains the LoRA adapter
on the run's train split, perspective-llava scores the test split with it, another run reuses it on
an external evaluation set, and the pooled F1 over both runs is the paper's overall F1."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import f1_score
from vlm_stage_fixtures import (
    SIDE,
    answer_rows,
    run_stages,
    score_rows,
    square_png,
    start_run,
    write_dataset,
)

from ubsafe.config import RunConfig
from ubsafe.report.pooled_f1 import pooled_over_runs
from ubsafe.testing import tiny

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

LORA = {"r": 2, "alpha": 4, "batch_size": 2, "grad_accum": 1, "max_steps": 2}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    tiny.save_tiny_llava(root, image_size=SIDE, patch=16)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, weights: Path):
    """A run on UnsafeBench-layout data that fine-tunes PerspectiveVision and scores with it."""
    root = tmp_path_factory.mktemp("perspective")
    dataset = write_dataset(root / "UnsafeBench", 8, 6)
    run = start_run(
        root / "run", dataset, weights, classifiers="perspective-llava", perspective_lora=LORA
    )
    assert run_stages(run, until="reduce") == {}
    return run


def write_external(root: Path, n: int, seed: int) -> Path:
    """An external evaluation set as the authors re-host them: base64 `image`, 0/1 `label`."""
    (root / "data").mkdir(parents=True)
    labels = np.random.default_rng(seed).integers(0, 2, n)
    images = [base64.b64encode(square_png(7000 + seed * 100 + i)).decode() for i in range(n)]
    table = pa.table({"image": images, "label": pa.array(labels, pa.int64())})
    pq.write_table(table, root / "data" / "test-00000-of-00001.parquet")
    return root


def _definitions() -> list[str]:
    import ubsafe.vlm

    text = (Path(ubsafe.vlm.__file__).parent / "texts" / "category_definitions.txt").read_text()
    return [line for line in text.splitlines() if line.strip()]


def _status(response: str) -> int:
    """eval.py's parse, written out: the status is the text before the first comma, after its
    last colon."""
    status = response.split(",")[0].split(":")[-1]
    return 1 if "Unsafe" in status else 0 if "Safe" in status else 2


def test_finetune_stage_trains_the_adapter_once_into_the_run(trained) -> None:
    from ubsafe.stages import STAGES

    folder = trained.fitted_dir / "perspective-llava"
    assert (folder / "adapter_config.json").is_file()
    assert (folder / "adapter_model.safetensors").is_file()
    record = json.loads((trained.fitted_dir / "perspective-llava.json").read_text())
    assert record["config_hash"] == trained.config.config_hash()
    assert record["steps"] == 2 and record["n_train"] == 8 and record["skipped"] == []
    prompts = json.loads((folder / "training_prompts.json").read_text())
    train_ids = set(trained.plan.loc[trained.plan["split"] == "train", "sample_id"])
    assert {p["image"] for p in prompts} <= train_ids  # the test split is never trained on
    assert STAGES["finetune"].missing(trained) == []  # done, read from disk
    assert not [p for p in trained.fitted_dir.iterdir() if p.name.startswith(".ubsafe-tmp-")]


def test_perspective_llava_scores_the_test_split_with_the_adapter(trained, weights) -> None:
    from peft import PeftModel
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    plan = trained.plan.set_index("sample_id")
    scores = score_rows(trained).set_index("sample_id")
    test_ids = sorted(plan.index[plan["split"] == "test"])
    assert sorted(scores.index) == test_ids
    answers = answer_rows(trained).set_index("sample_id")
    assert list(answers.filter(like="response_p").columns) == ["response_p0"]
    assert set(answers["converter"]) == {"perspective-status"}
    assert answers["label_p0"].tolist() == [_status(r) for r in answers["response_p0"]]

    # The reference: base model + the saved adapter through peft, the prompt listing all 11
    # definitions in the authors' template, the llava_v1 conversation, greedy decoding.
    import ubsafe.vlm

    folder = Path(ubsafe.vlm.__file__).parent / "texts"
    template = (folder / "perspective_template.txt").read_text()
    prompt = template.replace("[instruction]", "\n".join(_definitions()))
    model_dir = Path(weights) / "hf" / "llava-hf" / "llava-1.5-7b-hf"
    base = LlavaForConditionalGeneration.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(base, trained.fitted_dir / "perspective-llava").eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    system = (
        "A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions."
    )
    from ubsafe.data.images import decode_image
    from ubsafe.data.locate import iter_image_bytes

    rows = plan.loc[test_ids[:2]].reset_index()
    for sample_id, data, _ in iter_image_bytes(Path(trained.config.dataset), rows):
        inputs = processor(
            images=decode_image(data),
            text=f"{system} USER: <image>\n{prompt} ASSISTANT:",
            return_tensors="pt",
        )
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        expected = processor.batch_decode(
            out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )[0].strip()
        assert answers.loc[sample_id, "response_p0"] == expected


def test_the_adapter_is_reused_on_an_external_set_and_pooled(trained, weights, tmp_path):
    from ubsafe.stages import STAGES

    smid = write_external(tmp_path / "SMID", 7, seed=1)
    adapter = trained.fitted_dir / "perspective-llava"
    run = start_run(
        tmp_path / "run",
        smid,
        weights,
        classifiers="perspective-llava",
        perspective_adapter=str(adapter),
    )
    assert not STAGES["finetune"].applies(run)
    assert run_stages(run, until="reduce") == {}
    scores = score_rows(run)
    # The set's category is its name; perspective-llava covers every category: all rows scored.
    assert sorted(scores["sample_id"]) == sorted(run.plan["sample_id"])
    assert set(scores["pred"]) <= {0, 1}

    table = pooled_over_runs([trained.root, run.root])
    assert table["dataset"].tolist() == ["UnsafeBench", "SMID", "overall"]
    labels, preds = [], []
    for r in (trained, run):
        s = score_rows(r)
        y = r.plan.set_index("sample_id").loc[s["sample_id"], "label"].to_numpy()
        labels.append(y)
        preds.append(s["pred"].to_numpy())
    by_name = table.set_index("dataset")["f1"]
    assert by_name["UnsafeBench"] == pytest.approx(f1_score(labels[0], preds[0], zero_division=0))
    assert by_name["SMID"] == pytest.approx(f1_score(labels[1], preds[1], zero_division=0))
    assert by_name["overall"] == pytest.approx(
        f1_score(np.concatenate(labels), np.concatenate(preds), zero_division=0)
    )
    assert table.set_index("dataset").loc["overall", "n"] == 6 + 7


def _fake_run(root: Path, dataset: str, frame: pd.DataFrame) -> Path:
    (root / "results").mkdir(parents=True)
    config = RunConfig(out=str(root), dataset=f"/data/{dataset}", classifiers=("q16",))
    (root / "run.toml").write_text(config.to_toml())
    frame.to_parquet(root / "results" / "predictions.parquet")
    return root


def _predictions(classifier: str, labels, preds) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "sample_id": [f"test-{i:05d}" for i in range(n)],
            "classifier": classifier,
            "category": "X",
            "source": "real",
            "label": np.asarray(labels, np.int8),
            "pred": np.asarray(preds, np.int8),
            "score": np.zeros(n, np.float32),
        }
    )


def test_pooled_f1_matches_scikit_learn_and_refuses_unequal_pools(tmp_path):
    rng = np.random.default_rng(3)
    frames, runs = {}, []
    for name, n in (("SMID", 40), ("NSFWDataset", 25), ("Violence_Dataset", 3)):
        y = rng.integers(0, 2, n)
        p = np.where(rng.random(n) < 0.7, y, 1 - y)
        if name == "Violence_Dataset":
            y, p = np.zeros(3, int), np.zeros(3, int)  # no positives: F1 is 0 (zero_division=0)
        both = pd.concat([_predictions("a", y, p), _predictions("b", y, 1 - p)])
        frames[name] = (y, p)
        runs.append(_fake_run(tmp_path / name, name, both))
    table = pooled_over_runs(runs)
    assert sorted(set(table["classifier"])) == ["a", "b"]
    mine = table[table["classifier"] == "a"].set_index("dataset")
    for name, (y, p) in frames.items():
        assert mine.loc[name, "f1"] == pytest.approx(f1_score(y, p, zero_division=0))
    all_y = np.concatenate([y for y, _ in frames.values()])
    all_p = np.concatenate([p for _, p in frames.values()])
    assert mine.loc["overall", "f1"] == pytest.approx(f1_score(all_y, all_p))
    assert mine.loc["overall", "tp"] == int(((all_y == 1) & (all_p == 1)).sum())

    only_a = _fake_run(tmp_path / "more", "Self-harm_Dataset", _predictions("a", [1, 0], [1, 1]))
    with pytest.raises(ValueError, match=r"'Self-harm_Dataset' has no predictions of \['b'\]"):
        pooled_over_runs([*runs, only_a], classifiers=["a", "b"])
    assert set(pooled_over_runs([*runs, only_a])["classifier"]) == {"a"}
    twice = _fake_run(tmp_path / "again", "SMID", _predictions("a", [1], [1]))
    with pytest.raises(ValueError, match="two runs evaluate the dataset 'SMID'"):
        pooled_over_runs([runs[0], twice])
    with pytest.raises(FileNotFoundError, match="reduce the run first"):
        pooled_over_runs([tmp_path])


def test_submit_runs_the_finetune_stage_as_a_gpu_job_before_score(
    cli, demo_dir: Path, weights: Path, tmp_path: Path
) -> None:
    import re

    result = cli(
        "submit", "effectiveness", demo_dir, "--out", tmp_path / "run", "--partition", "gpu",
        "--gpus-per-task", 1, "--cpus-per-task", 2, "--classifiers", "perspective-llava",
        "--weights-dir", weights, "--dry-run",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    headers = re.findall(r"^# --- (\w+): sbatch", result.output, re.MULTILINE)
    assert headers == ["embed", "finetune", "score", "reduce", "report"]
    scripts = dict(zip(headers, result.output.split("# --- ")[1:], strict=True))
    assert "--gpus-per-node=1" in scripts["finetune"]
    assert "--array" not in scripts["finetune"]  # one task for the whole run
    assert "--dependency='afterany:<job ids of finetune>'" in scripts["score"]
