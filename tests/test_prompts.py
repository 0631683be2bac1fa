"""Prompt sets: I2P's CSV, prompt manifests, UnsafeBench's text column, checks and the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import simple_rows, write_unsafebench

from ubsafe.data.issues import DatasetError
from ubsafe.prompts import default_seed, demo_prompts, open_prompts, truncation
from ubsafe.taxonomy import CATEGORIES, I2P_CATEGORIES

I2P_HEADER = [
    "prompt",
    "categories",
    "hard",
    "inappropriate_percentage",
    "nudity_percentage",
    "q16_percentage",
    "sd_safety_percentage",
    "prompt_toxicity",
    "lexica_url",
    "sd_seed",
    "sd_guidance_scale",
    "sd_image_width",
    "sd_image_height",
    "sd_model",
]


def i2p_rows() -> list[dict[str, object]]:
    names = list(I2P_CATEGORIES)
    rows = []
    for i in range(9):
        categories = names[i % 7] if i < 7 else "violence, self-harm"
        rows.append(
            {
                "prompt": f"prompt number {i}, with a comma" if i != 8 else "prompt number 0, ü",
                "categories": categories,
                "hard": i % 2,
                "inappropriate_percentage": 10.0 * i,
                "nudity_percentage": 0.0,
                "q16_percentage": 10.0 * i,
                "sd_safety_percentage": 0,
                "prompt_toxicity": 0.1,
                "lexica_url": f"https://lexica.art/prompt/{i:04x}",
                "sd_seed": 4290749014 if i == 3 else 1000 + i,
                "sd_guidance_scale": 7 if i % 3 else 12,
                "sd_image_width": 512 if i != 5 else 448,
                "sd_image_height": 512,
                "sd_model": "stable-diffusion-v1-4",
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict[str, object]], header: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_i2p_columns_are_mapped_onto_the_contract(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "i2p_benchmark.csv", i2p_rows(), I2P_HEADER)
    prompts = open_prompts(path)
    frame = prompts.frame
    assert prompts.kind == "i2p"
    assert list(frame.columns) == [
        "prompt_id",
        "prompt",
        "categories",
        "seed",
        "guidance",
        "width",
        "height",
        "negative_prompt",
    ]
    assert str(frame["seed"].dtype) == "int64"
    assert str(frame["guidance"].dtype) == "float64"
    assert str(frame["width"].dtype) == "Int64" and str(frame["height"].dtype) == "Int64"
    assert frame["prompt_id"].is_unique
    assert frame["prompt_id"].str.fullmatch(r"i2p-[0-9a-f]{16}").all()
    by_prompt = frame.set_index("prompt")
    row = by_prompt.loc["prompt number 3, with a comma"]
    assert row["seed"] == 4290749014
    assert row["categories"] == ["Self-harm"]
    assert by_prompt.loc["prompt number 5, with a comma", "width"] == 448
    assert by_prompt.loc["prompt number 0, with a comma", "guidance"] == 12.0
    assert by_prompt.loc["prompt number 1, with a comma", "guidance"] == 7.0
    assert by_prompt.loc["prompt number 0, ü", "categories"] == ["Violence", "Self-harm"]
    assert frame["negative_prompt"].isna().all()
    # a folder holding the file, and the explicit format, read the same set
    assert open_prompts(tmp_path).fingerprint == prompts.fingerprint
    assert open_prompts(path, fmt="i2p").fingerprint == prompts.fingerprint
    assert open_prompts(path, fmt="auto").kind == "i2p"
    # the manifest reader ignores I2P's seed column: another set, and it says which columns
    as_manifest = open_prompts(path, fmt="manifest")
    assert as_manifest.fingerprint != prompts.fingerprint
    assert "sd_seed" in as_manifest.notes[0]


def test_i2p_category_table_maps_each_of_the_seven(tmp_path: Path) -> None:
    assert len(I2P_CATEGORIES) == 7
    assert set(I2P_CATEGORIES.values()) <= set(CATEGORIES)
    rows = i2p_rows()[:7]
    for row, name in zip(rows, I2P_CATEGORIES, strict=True):
        row["categories"] = name
    rows.append(dict(rows[0], prompt="all", categories=", ".join(I2P_CATEGORIES)))
    frame = open_prompts(write_csv(tmp_path / "i2p.csv", rows, I2P_HEADER)).frame
    got = dict(zip(frame["prompt"], frame["categories"], strict=True))
    for row, (name, ubsafe_name) in zip(rows, I2P_CATEGORIES.items(), strict=False):
        assert got[row["prompt"]] == [ubsafe_name], name
    assert got["all"] == [
        "Hate",
        "Harassment",
        "Violence",
        "Self-harm",
        "Sexual",
        "Shocking",
        "Illegal activity",
    ]


MANIFEST = [
    {
        "prompt_id": "a1",
        "prompt": "a watercolour fox",
        "categories": ["Violence", "self-harm"],
        "seed": 7,
        "guidance": 7.5,
        "width": 512,
        "height": 768,
        "negative_prompt": "blurry",
    },
    {"prompt_id": "b2", "prompt": "a quiet street at night", "categories": []},
    {"prompt_id": "c3", "prompt": "a bowl of soup", "categories": ["Spam"], "seed": 0},
]


def _as_csv_row(row: dict[str, object]) -> dict[str, object]:
    out = dict(row)
    out["categories"] = ", ".join(row.get("categories", []))  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_manifest_formats_read_the_same_set(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"prompts.{suffix}"
    header = list(MANIFEST[0])
    if suffix == "csv":
        write_csv(path, [_as_csv_row(r) for r in MANIFEST], header)
    elif suffix == "jsonl":
        write_jsonl(path, MANIFEST)
    else:
        pq.write_table(pa.Table.from_pylist(MANIFEST), path)
    prompts = open_prompts(path)
    assert prompts.kind == "manifest"
    frame = prompts.frame.set_index("prompt_id")
    assert list(frame.index) == ["a1", "b2", "c3"]
    assert frame.loc["a1", "categories"] == ["Violence", "Self-harm"]
    assert frame.loc["a1", "seed"] == 7 and frame.loc["c3", "seed"] == 0
    assert frame.loc["a1", "guidance"] == 7.5 and math.isnan(frame.loc["b2", "guidance"])
    assert frame.loc["a1", "height"] == 768 and frame.loc["b2", "width"] is pd.NA
    assert frame.loc["a1", "negative_prompt"] == "blurry"
    assert frame.loc["b2", "negative_prompt"] is None
    assert frame.loc["b2", "seed"] == default_seed("b2")
    reference = tmp_path / "reference.jsonl"
    write_jsonl(reference, MANIFEST)
    assert prompts.fingerprint == open_prompts(reference).fingerprint


def test_default_seed_is_a_uint32_of_the_id_alone(tmp_path: Path) -> None:
    expected = int.from_bytes(
        hashlib.blake2b(b"ubsafe.prompt-seed\x1fb2", digest_size=4).digest(), "little"
    )
    assert default_seed("b2") == expected
    assert all(0 <= default_seed(f"id-{i}") < 2**32 for i in range(200))
    rows = [{"prompt": f"p{i}"} for i in range(6)]
    first = open_prompts(write_jsonl(tmp_path / "a.jsonl", rows)).frame
    second = open_prompts(write_jsonl(tmp_path / "b.jsonl", rows[::-1][:4])).frame
    merged = first.merge(second, on="prompt", suffixes=("", "_other"))
    assert len(merged) == 4
    assert (merged["seed"] == merged["seed_other"]).all()
    assert (merged["prompt_id"] == merged["prompt_id_other"]).all()
    assert first["seed"].nunique() == 6


def test_ids_and_fingerprint_do_not_depend_on_row_order(tmp_path: Path) -> None:
    rows = i2p_rows()
    forward = open_prompts(write_csv(tmp_path / "f" / "i2p.csv", rows, I2P_HEADER))
    backward = open_prompts(write_csv(tmp_path / "b" / "i2p.csv", rows[::-1], I2P_HEADER))
    pd.testing.assert_frame_equal(forward.frame, backward.frame)
    assert forward.fingerprint == backward.fingerprint
    subset = open_prompts(write_csv(tmp_path / "s" / "i2p.csv", rows[4:], I2P_HEADER))
    assert set(subset.frame["prompt_id"]) < set(forward.frame["prompt_id"])
    # the same text twice with different seeds is two prompts (I2P has 236 such texts)
    twice = [{"prompt": "same", "seed": 1}, {"prompt": "same", "seed": 2}]
    assert len(open_prompts(write_jsonl(tmp_path / "t.jsonl", twice))) == 2


def test_unsafebench_text_keeps_the_image_readers_ids(tmp_path: Path) -> None:
    from ubsafe.data.dataset import open_dataset

    train = simple_rows(9, 1)
    for i, row in enumerate(train):
        row["text"] = f"caption {i}" if i != 4 else ""
    test = simple_rows(5, 2)
    for i, row in enumerate(test):
        row["text"] = f"test caption {i}"
    root = write_unsafebench(tmp_path / "ub", {"train": train, "test": test}, files_per_split=2)
    prompts = open_prompts(root, fmt="unsafebench")
    assert prompts.kind == "unsafebench"
    images = open_dataset(root).table.set_index("sample_id")
    frame = prompts.frame.set_index("prompt_id")
    assert len(frame) == 13
    assert "train-00004" not in frame.index
    assert prompts.notes == ("1 row(s) without text skipped",)
    assert frame.loc["train-00007", "prompt"] == "caption 7"
    assert frame.loc["test-00003", "prompt"] == "test caption 3"
    for prompt_id, row in frame.iterrows():
        assert row["categories"] == [images.loc[prompt_id, "category"]]


def test_builtin_demo_prompts(tmp_path: Path) -> None:
    builtin = open_prompts("builtin:demo")
    assert len(builtin) == 12
    covered = {c for cats in builtin.frame["categories"] for c in cats}
    assert covered == set(CATEGORIES)
    path = demo_prompts(tmp_path)
    written = open_prompts(path)
    assert written.fingerprint == builtin.fingerprint
    pd.testing.assert_frame_equal(written.frame, builtin.frame)


def clip_tokenizer(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real CLIP tokenizer over a letters-only vocabulary (each one-letter word = 1 token)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=77
    )


def test_truncation_counts_prompts_past_77_tokens(tmp_path: Path) -> None:
    from ubsafe.prompts import truncate

    tokenizer = clip_tokenizer(tmp_path)
    fits = " ".join(["a"] * 75)  # 75 words + start + end = 77 tokens
    over = " ".join(["a"] * 75 + ["b", "c"])
    result = truncation([fits, over, "x y"], tokenizer)
    assert result.max_length == 77
    assert result.lengths == (77, 79, 4)
    assert result.truncated == (False, True, False)
    assert result.count == 1
    assert result.removed == ("", "b c", "")
    assert truncate([over], tokenizer) == [fits]
    assert truncation([over], tokenizer, max_length=78).removed == ("c",)


# --- bad prompt files: each refused with its own message, every issue listed, nothing written


def bad(name: str, text: str | bytes):  # type: ignore[no-untyped-def]
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return path

    return build


CORPUS = [
    (
        "empty prompt",
        bad("p.csv", "prompt,seed\nok,1\n  ,2\n"),
        ["p.csv:line 3", "prompt is empty", "write the prompt text"],
    ),
    (
        "unknown category",
        bad("p.jsonl", '{"prompt": "x", "categories": ["Violense"]}\n'),
        ["p.jsonl:line 1", "category 'Violense'", "did you mean 'Violence'?"],
    ),
    (
        "seed not an integer",
        bad("p.csv", "prompt,seed\nx,12.5\n"),
        ["p.csv:line 2", "seed '12.5' is not an integer"],
    ),
    (
        "seed outside uint32",
        bad("p.csv", "prompt,seed\nx,4294967296\n"),
        ["p.csv:line 2", "seed 4294967296 is outside uint32"],
    ),
    (
        "duplicated ids",
        bad("p.csv", "prompt_id,prompt\nq1,x\nq2,y\nq1,z\n"),
        ["p.csv:line 2, p.csv:line 4", "prompt_id 'q1' appears 2 times"],
    ),
    (
        "missing prompt column",
        bad("p.csv", "text,seed\nx,1\n"),
        ["missing column(s) prompt (has: text, seed)"],
    ),
    (
        "not UTF-8",
        bad("p.csv", "prompt\nok\ncaf\xe9 au lait\n".encode("latin-1")),
        ["p.csv:line 3", "byte 0xe9", "is not UTF-8", "iconv"],
    ),
    (
        "broken JSON line",
        bad("p.jsonl", '{"prompt": "x"}\n{"prompt": "y",\n'),
        ["p.jsonl:line 2", "is not valid JSON"],
    ),
    (
        "width not a multiple of 8",
        bad("p.csv", "prompt,width,height\nx,500,512\n"),
        ["p.csv:line 2", "width '500' is not a positive multiple of 8"],
    ),
    (
        "non-positive height",
        bad("p.jsonl", '{"prompt": "x", "height": 0}\n'),
        ["p.jsonl:line 1", "height 0 is not a positive multiple of 8"],
    ),
    (
        "guidance not a number",
        bad("p.csv", "prompt,guidance\nx,strong\n"),
        ["p.csv:line 2", "guidance 'strong' is not a finite number"],
    ),
    ("empty file", bad("p.csv", ""), ["file is empty (0 bytes)"]),
    ("header only", bad("p.csv", "prompt,seed\n"), ["contains no prompts"]),
    (
        "id with a colon",
        bad("p.csv", "prompt_id,prompt\nsd:1,x\n"),
        ["p.csv:line 2", "prompt_id 'sd:1' contains ':'"],
    ),
    (
        "I2P seed column garbage",
        bad("i2p.csv", "prompt,categories,sd_seed\nx,violence,abc\n"),
        ["i2p.csv:line 2", "seed 'abc' is not an integer"],
    ),
]
IDS = [c[0] for c in CORPUS]


def test_corpus_messages_are_distinct() -> None:
    messages = [" ".join(expected) for _, _, expected in CORPUS]
    assert len(set(messages)) == len(messages) >= 8


@pytest.mark.parametrize("name,build,expected", CORPUS, ids=IDS)
def test_bad_prompt_file_is_refused(tmp_path: Path, name, build, expected) -> None:
    path = build(tmp_path)
    with pytest.raises(DatasetError) as info:
        open_prompts(path, fmt="i2p" if path.name == "i2p.csv" else "manifest")
    text = info.value.describe()
    for fragment in expected:
        assert fragment in text, f"{name}: {fragment!r} not in:\n{text}"


@pytest.mark.parametrize("name,build,expected", CORPUS, ids=IDS)
def test_data_check_refuses_bad_prompt_file(tmp_path: Path, cli, name, build, expected) -> None:
    path = build(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    fmt = "i2p" if path.name == "i2p.csv" else "prompts"
    result = cli("data", "check", path, "--format", fmt)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for fragment in expected:
        assert fragment in result.output, f"{name}: {fragment!r} not in:\n{result.output}"
    assert sorted(tmp_path.rglob("*")) == before


def test_every_issue_is_listed_at_once(tmp_path: Path, cli) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "prompt_id,prompt,categories,seed,guidance,width\na,,Hat,x,7,512\na,y,,-3,much,12\n",
        encoding="utf-8",
    )
    result = cli("data", "check", path)  # detected as prompts by its `prompt` column
    assert result.exit_code == 1
    for fragment in [
        "prompt is empty",
        "category 'Hat'",
        "seed 'x' is not an integer",
        "seed -3 is outside uint32",
        "guidance 'much'",
        "width '12'",
        "prompt_id 'a' appears 2 times",
    ]:
        assert fragment in result.output, fragment


def test_data_check_summarises_a_prompt_file(tmp_path: Path, cli) -> None:
    path = write_csv(tmp_path / "i2p_benchmark.csv", i2p_rows(), I2P_HEADER)
    result = cli("data", "check", path)
    assert result.exit_code == 0, result.output
    assert "i2p prompts, 9 prompts" in result.output
    assert re.search(r"\n  Violence +3\n", result.output), result.output
    assert re.search(r"\n  Self-harm +3\n", result.output)
    assert re.search(r"\n  Hate +1\n", result.output)
    assert "seeds: 9 from the file" in result.output
    assert "ids: 0 from the file, 9 derived" in result.output
    demo = cli("data", "check", "builtin:demo")
    assert demo.exit_code == 0 and "12 prompts" in demo.output


def test_fetch_i2p_offline_is_one_clean_line(tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run(
        [sys.executable, "-m", "ubsafe", "data", "fetch", "i2p", "--to", str(tmp_path / "i2p")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "AIML-TUDA/i2p" in lines[0] and "failed" in lines[0]
