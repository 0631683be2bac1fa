"""Weight files are pinned: hub revision and sha256 where known; fetch and loaders check them; an
offline fetch says what failed, without a traceback."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ubsafe import weights
from ubsafe.weights import WeightFile, WeightsMismatch, pins, require


def test_pins_are_full_commits_and_checksums() -> None:
    revisions, checksums = pins()
    assert revisions and checksums
    assert all(re.fullmatch(r"[0-9a-f]{40}", rev) for rev in revisions.values())
    assert all(re.fullmatch(r"[0-9a-f]{64}", sha) for sha in checksums.values())
    for key in checksums:
        assert key.rsplit("/", 1)[0] in revisions, f"{key}: a checksum belongs to a pinned revision"


def test_registry_files_carry_their_pins() -> None:
    from ubsafe.encoders import weight_files as encoder_files
    from ubsafe.vlm.registry import ROBERTA_BASE_FILES

    checker = encoder_files("sd-checker")
    assert {f.revision for f in checker} == {"cb41f3a270d63d454d385fc2e4f571c487c253c5"}
    vocab = next(f for f in ROBERTA_BASE_FILES if f.filename == "vocab.json")
    assert vocab.revision == "e2da8e2f811d1448a5b465c236feacd80ffbac7b"
    assert vocab.sha256 == pins()[1]["FacebookAI/roberta-base/vocab.json"]
    assert vocab.url.endswith("/resolve/e2da8e2f811d1448a5b465c236feacd80ffbac7b/vocab.json")


def test_generators_and_the_encoder_fetch_a_fixed_commit() -> None:
    from ubsafe.encoders import weight_files as encoder_files
    from ubsafe.generate.registry import weight_files as generator_files

    revisions = pins()[0]
    for name in ("sd-1.4", "sd-1.5", "sd-2.1", "sld-max", "negative-prompt"):
        files = generator_files(name)
        base = [f for f in files if f.repo in revisions]
        assert base, f"{name}: its base pipeline is pinned"
        assert all(f"/resolve/{revisions[f.repo]}/" in f.url for f in base)
    assert {f.revision for f in encoder_files("vit-l-14-openai")} == {
        revisions["timm/vit_large_patch14_clip_224.openai"]
    }


@pytest.fixture(autouse=True)
def checking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(weights.VERIFY_ENV, "1")


def test_loaders_check_a_known_checksum_once_per_file_version(tmp_path: Path) -> None:
    content = b"weights of a tiny model"
    wf = WeightFile("someone/model", "w.bin", sha256=hashlib.sha256(content).hexdigest())
    path = wf.local_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    require("tiny", [wf], tmp_path)
    assert path.with_name("w.bin.sha256-ok").is_file()

    path.write_bytes(b"a different download!!!")  # same name, other bytes
    with pytest.raises(WeightsMismatch, match="checksum does not match"):
        require("tiny", [wf], tmp_path)
    require("tiny", [wf], tmp_path, verify=False)  # --no-verify
    weights.configure(verify=False)
    try:
        require("tiny", [wf], tmp_path)
    finally:
        weights.configure(verify=None)


def test_a_mismatching_file_stops_the_run_before_any_job(
    tmp_path: Path, demo_dir: Path, cli
) -> None:
    from ubsafe.classifiers.registry import run_weight_files
    from ubsafe.config import build_config

    weights_dir = tmp_path / "w"
    config = build_config(dataset=demo_dir, flags={"classifiers": "llava"})
    for wf in run_weight_files("llava", config):
        path = wf.local_path(weights_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not the real file")
    out = tmp_path / "run"
    args = ("run", "effectiveness", demo_dir, "--out", out, "--classifiers", "llava")
    result = cli(*args, "--weights-dir", weights_dir)
    assert result.exit_code == 1
    assert "checksum does not match" in result.output and "vocab.json" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_weights_fetch_offline_says_what_failed(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ubsafe",
            "weights",
            "fetch",
            "--to",
            str(tmp_path / "w"),
            "--encoders",
            "sd-checker",
            "--classifiers",
            "sd_filter",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot download https://huggingface.co/CompVis/stable-diffusion-safety-checker" in (
        done.stderr
    )
    assert "/resolve/cb41f3a270d63d454d385fc2e4f571c487c253c5/" in done.stderr
    assert "HF_HUB_OFFLINE is set" in done.stderr
