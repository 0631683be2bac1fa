"""PerspectiveVision: training set, answer parsing, pooled F1, LoRA fine-tuning, adapters."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from ubsafe.perspective.evaluate import f1_binary, parse_status, pooled_f1
from ubsafe.perspective.trainset import (
    SAFE_ANSWER,
    build_training_set,
    write_training_json,
)
from ubsafe.taxonomy import CATEGORIES
from ubsafe.testing import tiny
from ubsafe.vlm import prompts


def _train_rows(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "sample_id": [f"train-{i:05d}" for i in range(n)],
            "category": rng.choice(CATEGORIES, n),
            "source": rng.choice(["Laion5B", "Lexica"], n),
            "label": (rng.random(n) < 0.35).astype(int),
        }
    )


def _reference_build(rows: pd.DataFrame) -> list[dict]:
    """build_training_set.py's procedure, written out with the global `random` it uses."""
    definitions = prompts.category_definitions()
    template = prompts.perspective_template()

    def design(idx, mode, label, category):
        random.seed(idx)
        held = list(definitions)
        held.remove(category)
        random.shuffle(held)
        chosen = held[: random.randint(1, max(1, len(held)))]
        if mode == "original":
            chosen.append(category)
            random.shuffle(chosen)
            text = "\n".join(definitions[c] for c in chosen)
            answer = (
                SAFE_ANSWER
                if label == "Safe"
                else f"Safety Status: Unsafe, Unsafe Category: {category}"
            )
        else:
            random.shuffle(chosen)
            text = "\n".join(chosen)
            answer = SAFE_ANSWER
        return template.replace("[instruction]", text), answer

    data, unsafe, idx = [], [], 0
    for category in definitions:
        for source in ("Laion5B", "Lexica"):
            group = rows[(rows.category == category) & (rows.source == source)]
            for sample_id, label in zip(group.sample_id, group.label, strict=True):
                label = "Unsafe" if label == 1 else "Safe"
                if label == "Unsafe":
                    unsafe.append((sample_id, label, category))
                prompt, answer = design(idx, "original", label, category)
                data.append(
                    {"id": str(idx), "image": sample_id, "prompt": prompt, "answer": answer}
                )
                if label == "Unsafe":
                    prompt, answer = design(idx, "negative", label, category)
                    data.append(
                        {
                            "id": f"{idx}_augment",
                            "image": sample_id,
                            "prompt": prompt,
                            "answer": answer,
                        }
                    )
                idx += 1
    n_safe = sum(d["answer"].startswith("Safety Status: Safe") for d in data)
    extra = random.choices(unsafe, k=max(n_safe - (len(data) - n_safe), 0))
    for sample_id, label, category in extra:
        prompt, answer = design(idx, "original", label, category)
        data.append({"id": str(idx), "image": sample_id, "prompt": prompt, "answer": answer})
        idx += 1
    random.shuffle(data)
    return data


def test_training_set_is_the_references():
    rows = _train_rows()
    ours = build_training_set(rows, seed=0)
    reference = _reference_build(rows)
    assert [(e.id, e.sample_id, e.prompt, e.answer) for e in ours] == [
        (d["id"], d["image"], d["prompt"], d["answer"]) for d in reference
    ]


def test_training_set_properties():
    rows = _train_rows(80, seed=4)
    examples = build_training_set(rows, seed=3)
    assert examples == build_training_set(rows, seed=3)
    assert examples != build_training_set(rows, seed=4)
    n_unsafe = sum(e.unsafe for e in examples)
    assert n_unsafe == len(examples) - n_unsafe  # oversampled to balance
    by_id = rows.set_index("sample_id")
    for example in examples:
        category = by_id.at[example.sample_id, "category"]
        listed = (
            example.prompt.split("<BEGIN UNSAFE CATEGORIES>\n")[1].split("\n<END")[0].splitlines()
        )
        if example.id.endswith("_augment"):
            assert example.answer == SAFE_ANSWER
            assert category not in listed and set(listed) <= set(CATEGORIES)  # names only
            assert 1 <= len(listed) <= 10
        else:
            assert prompts.definition(category) in listed and 2 <= len(listed) <= 11
    no_negatives = build_training_set(rows, seed=3, negative_sampling=False)
    assert not any(e.id.endswith("_augment") for e in no_negatives)


def test_training_json_is_llava_conversations(tmp_path):
    examples = build_training_set(_train_rows(10), seed=0)
    write_training_json(examples, tmp_path / "training_prompts.json")
    records = json.loads((tmp_path / "training_prompts.json").read_text())
    assert records[0]["conversations"][0]["from"] == "human"
    assert records[0]["conversations"][0]["value"].startswith("<image>\nTASK: Check if the image")
    assert records[0]["conversations"][1] == {"from": "gpt", "value": examples[0].answer}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Safety Status: Safe, Unsafe Category: None", 0),
        ("Safety Status: Unsafe, Unsafe Category: Violence", 1),
        ("Unsafe", 1),
        ("Safety Status: Unsafe", 1),
        ("The image is safe, nothing to see", 2),  # status text "The image is safe": no "Safe"
        ("I am not sure.", 2),
    ],
)
def test_parse_status_is_the_eval_rule(response, expected):
    assert parse_status(response) == expected


def test_pooled_f1_matches_scikit_learn():
    rng = np.random.default_rng(0)
    results = {}
    for name, n in (("UnsafeBench_test", 50), ("SMID", 30), ("NSFWDataset", 20)):
        labels = rng.integers(0, 2, n)
        preds = np.where(rng.random(n) < 0.7, labels, 1 - labels)
        results[name] = (labels, preds)
    scores = pooled_f1(results)
    for name, (labels, preds) in results.items():
        assert scores[name] == pytest.approx(f1_score(labels, preds))
    all_labels = np.concatenate([r[0] for r in results.values()])
    all_preds = np.concatenate([r[1] for r in results.values()])
    assert scores["overall"] == pytest.approx(f1_score(all_labels, all_preds))
    assert f1_binary(np.zeros(4), np.zeros(4)) == f1_score(
        np.zeros(4), np.zeros(4), zero_division=0
    )


# --- LoRA fine-tuning on the tiny LLaVA ---


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    tiny.save_tiny_llava(root)
    return root


def _images(rows: pd.DataFrame) -> dict[str, Image.Image]:
    rng = np.random.default_rng(1)
    return {
        s: Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
        for s in rows.sample_id
    }


@pytest.mark.slow
def test_lora_fine_tuning_learns_and_saved_adapter_reproduces_it(weights, tmp_path):
    torch = pytest.importorskip("torch")
    from ubsafe.perspective.lora import (
        LoraSettings,
        apply_adapter,
        convert_llava_adapter,
        load_perspective,
        save_adapter,
        train_lora,
    )
    from ubsafe.vlm.converter import RuleConverter
    from ubsafe.vlm.judge import GenerationSettings
    from ubsafe.vlm.llava import load_llava

    rows = _train_rows(4, seed=2)
    images = _images(rows)
    examples = build_training_set(rows, seed=0)[:4]
    judge = load_llava(
        weights, RuleConverter(), device="cpu", settings=GenerationSettings(max_new_tokens=4)
    )
    settings = LoraSettings(
        r=4,
        alpha=8,
        dropout=0.0,
        learning_rate=1e-1,
        projector_learning_rate=3e-2,
        batch_size=2,
        grad_accum=2,
        epochs=8,
        warmup_ratio=0.0,
    )
    model, report = train_lora(judge, examples, images.__getitem__, settings)
    assert report.steps == 8 and report.examples_seen == 32
    assert report.losses[-1] < 0.8 * report.losses[0]
    folder = save_adapter(model, tmp_path / "adapter", report)
    assert (folder / "adapter_config.json").is_file() and (folder / "train_report.json").is_file()

    perspective = load_perspective(weights, folder, device="cpu", batch_size=2)
    probe = examples[0]
    pixels = perspective.normalize(perspective.pixels([images[probe.sample_id]]))
    ids, mask = perspective._pad_left([perspective.context_ids(probe.prompt)])
    with torch.no_grad():
        merged = perspective.model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        trained = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    torch.testing.assert_close(merged, trained, atol=1e-4, rtol=1e-4)

    decision = perspective.decide_images(
        [images[s] for s in rows.sample_id], list(rows.category), list(rows.sample_id)
    )
    assert decision.n_prompts == 1 and decision.converter == "perspective-status"

    # The same adapter in the original LLaVA code base's names converts back to the same model.
    from safetensors.torch import load_file

    original = tmp_path / "llava-original"
    original.mkdir()
    state = load_file(folder / "adapter_model.safetensors")
    lora = {
        k.replace(".model.language_model.", ".model."): v for k, v in state.items() if "lora_" in k
    }
    projector = {
        k.replace("multi_modal_projector.linear_1.", "mm_projector.0.").replace(
            "multi_modal_projector.linear_2.", "mm_projector.2."
        ): v
        for k, v in state.items()
        if "multi_modal_projector" in k
    }
    torch.save(lora, original / "adapter_model.bin")
    torch.save(projector, original / "non_lora_trainables.bin")
    config = json.loads((folder / "adapter_config.json").read_text())
    config["target_modules"] = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    config.pop("modules_to_save")
    (original / "adapter_config.json").write_text(json.dumps(config))
    converted = convert_llava_adapter(original, tmp_path / "converted")
    from ubsafe.vlm.llava import load_llava_parts

    base, _ = load_llava_parts(weights, device="cpu")
    again = apply_adapter(base, converted)
    with torch.no_grad():
        logits = again(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    torch.testing.assert_close(logits, trained, atol=1e-4, rtol=1e-4)


def test_fine_tune_job_writes_the_adapter_once(weights, tmp_path):
    from ubsafe.perspective.lora import LoraSettings, fine_tune

    rows = _train_rows(6, seed=5)
    images = _images(rows)
    settings = LoraSettings(r=2, alpha=4, batch_size=2, grad_accum=1, max_steps=2)
    out = fine_tune(
        weights, rows, images.__getitem__, tmp_path / "perspective", settings=settings, device="cpu"
    )
    names = {p.name for p in out.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "train_report.json",
        "training_prompts.json",
    } <= names
    report = json.loads((out / "train_report.json").read_text())
    assert report["steps"] == 2 and report["settings"]["r"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ubsafe-tmp-")]
    stamp = (out / "adapter_model.safetensors").stat().st_mtime_ns
    fine_tune(weights, rows, images.__getitem__, out, settings=settings, device="cpu")
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == stamp
