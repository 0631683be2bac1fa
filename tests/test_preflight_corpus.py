"""A user's first mistakes: each one stops `run`, `submit --dry-run` and `plan` before anything is
written, with a one-line-per-problem message that names the bad value, never a Python traceback.

The corpus drives every mistake through the real command line (Click, in process; three of them
also in a subprocess, as a user's shell sees them). No `run.toml` may be left behind: it is written
only after the preflight has passed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import png_bytes, simple_rows, write_unsafebench

RUN, SUBMIT, PLAN = "run", "submit", "plan"
ALL = (RUN, SUBMIT, PLAN)


@dataclass(frozen=True)
class Mistake:
    name: str
    #: flags after `--out OUT` (the config file, when given, is added as --config)
    flags: tuple[str, ...] = ()
    #: expected in the message: the bad value (every one of them)
    says: tuple[str, ...] = ()
    commands: tuple[str, ...] = ALL
    #: TOML text of a --config file
    config: str | None = None
    #: which dataset: the demo data, or one of the broken ones made below
    dataset: str = "demo"
    target: str = "effectiveness"
    extra: dict[str, str] = field(default_factory=dict)


MISTAKES = [
    Mistake("dataset path typo", dataset="typo", says=("demo-dta", "does not exist")),
    Mistake("dataset is a text file", dataset="text", says=("notes.txt",)),
    Mistake("dataset folder without data", dataset="empty", says=("empty-dataset",)),
    Mistake("manifest with a bad label", dataset="manifest", says=("'unsafe '",)),
    Mistake("fitted classifier without train split", dataset="testonly", says=("probe-all",)),
    Mistake("unknown classifier", ("--classifiers", "probe-al,nudenet"), ("'probe-al'",)),
    Mistake("two unknown classifiers", ("--classifiers", "q17,nudnet"), ("'q17'", "'nudnet'")),
    Mistake("empty classifier list", ("--classifiers", ""), ("--classifiers is empty",)),
    Mistake("unknown encoder", ("--encoder", "tiyn"), ("'tiyn'",)),
    Mistake(
        "unknown open_clip tag",
        ("--encoder", "openclip:ViT-B-32:nonexist"),
        ("'nonexist'",),
    ),
    Mistake(
        "perturbation typo",
        ("--perturbations", "fog,gausian_noise"),
        ("'gausian_noise'", "did you mean 'gaussian_noise'"),
        target="robustness",
    ),
    Mistake("severity out of range", config="severities = [0, 6]\n", says=("severities", "[0, 6]")),
    Mistake(
        "classifier option typo",
        config="[classifier_options.nudenet]\nthreshhold = 0.5\n",
        says=("'threshhold'", "did you mean 'threshold'"),
    ),
    Mistake(
        "classifier option of the wrong type",
        config='[classifier_options.nudenet]\nthreshold = "high"\n',
        says=("threshold = 'high'", "float"),
    ),
    Mistake(
        "classifier option list of the wrong items",
        config="[classifier_options.nudenet]\nunsafe_classes = [1, 2]\n",
        says=("unsafe_classes = [1, 2]", "list of str"),
    ),
    Mistake(
        "options for an unknown classifier",
        config="[classifier_options.nudnet]\nthreshold = 0.5\n",
        says=("classifier_options.nudnet", "'nudnet'"),
    ),
    Mistake(
        "coverage with an unknown category",
        config='[coverage]\nnudenet = ["Sexy"]\n',
        says=("'Sexy'",),
    ),
    Mistake("device that is no device", ("--device", "gpu"), ("'gpu'",)),
    Mistake("device index out of range", ("--device", "cuda:7"), ("'cuda:7'",), commands=(RUN,)),
    Mistake(
        "paper classifiers without weights",
        ("--classifiers", "sd_filter,q16"),
        (
            "pytorch_model.bin",
            "preprocessor_config.json",
            "prompts.p",
            "open_clip_model.safetensors",
            "ubsafe weights fetch --classifiers sd_filter,q16 --to",
        ),
        commands=(RUN, SUBMIT),
    ),
    Mistake("config that is not TOML", config="seed = = 3\n", says=("not valid TOML",)),
    Mistake("config file that does not exist", ("--config", "no-such.toml"), ("no-such.toml",)),
    Mistake("unknown setting", config="shardsize = 5\n", says=("shardsize", "unknown setting")),
    Mistake("shard size 0", ("--shard-size", "0"), ("--shard-size",)),
    Mistake("too few bootstrap replicates", ("--bootstrap", "5"), ("--bootstrap",)),
    Mistake("workers 0", ("--workers", "0"), ("--workers",), commands=(RUN, SUBMIT)),
    Mistake("unknown attack", config='attacks = ["fgsm", "cw"]\n', says=("'cw'",)),
    Mistake("negative attack budget", config="[attack]\neps = [-1.0]\n", says=("attack.eps",)),
    Mistake("attack mode typo", config='attack_mode = "papr"\n', says=("'papr'",)),
    Mistake("source kind typo", config='[source_map]\nLaion5B = "fake"\n', says=("'fake'",)),
    Mistake("replay of another model", config='gpt4v_model = "gpt-4o"\n', says=("'gpt-4o'",)),
    Mistake("LoRA setting typo", config="[perspective_lora]\nrnk = 4\n", says=("rnk",)),
    Mistake("converter typo", config='vlm_converter = "bert"\n', says=("'bert'",)),
    Mistake("embedding dtype typo", config='embedding_dtype = "float8"\n', says=("'float8'",)),
    Mistake("confidence level above 1", config="ci_level = 1.5\n", says=("ci_level", "1.5")),
    Mistake(
        "paper-mode attack source the data lacks",
        config='attack_mode = "paper"\nattack_sources = ["Laion5c"]\n',
        says=("'Laion5c'",),
        target="robustness",
        commands=(RUN, SUBMIT),
    ),
    Mistake("format flag typo", ("--format", "manifets"), ("'manifets'",)),
    Mistake(
        "profile that does not exist",
        ("--profile", "nosuch"),
        ("'nosuch'",),
        commands=(SUBMIT,),
    ),
]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from ubsafe.data.demo import write_demo

    root = tmp_path_factory.mktemp("mistakes")
    demo = write_demo(root / "demo-data", n=66, seed=3)
    text = root / "notes.txt"
    text.write_text("not a dataset\n")
    empty = root / "empty-dataset"
    empty.mkdir()
    images = root / "manifest"
    images.mkdir()
    (images / "a.png").write_bytes(png_bytes(1))
    (images / "b.png").write_bytes(png_bytes(2))
    manifest = images / "manifest.csv"
    manifest.write_text(
        "path,label,category,source\na.png,unsafe ,Sexual,Laion5B\nb.png,Safe,Hate,Lexica\n"
    )
    testonly = write_unsafebench(root / "testonly", {"test": simple_rows(24, 5)})
    (testonly / "ubsafe.toml").write_text(
        'encoder = "tiny"\nclassifiers = ["probe-all", "nudenet"]\n'
    )
    return {
        "demo": demo,
        "typo": root / "demo-dta",
        "text": text,
        "empty": empty,
        "manifest": manifest,
        "testonly": testonly,
    }


def command_line(mistake: Mistake, command: str, dataset: Path, out: Path, config: Path | None):
    flags = list(mistake.flags)
    if config is not None:
        flags += ["--config", str(config)]
    if command == PLAN:
        return ["plan", str(dataset), "--out", str(out), *flags]
    if command == SUBMIT:
        partition = [] if "--profile" in flags else ["--partition", "cpu"]
        return [
            "submit", mistake.target, str(dataset), "--out", str(out), *partition, "--dry-run",
            *flags,
        ]  # fmt: skip
    return ["run", mistake.target, str(dataset), "--out", str(out), *flags]


CASES = [pytest.param(m, c, id=f"{c}: {m.name}") for m in MISTAKES for c in ALL if c in m.commands]


def test_the_corpus_is_large() -> None:
    assert len(MISTAKES) >= 25
    assert len(CASES) >= 75


@pytest.mark.parametrize(("mistake", "command"), CASES)
def test_mistake_is_caught_before_anything_is_written(
    mistake: Mistake,
    command: str,
    datasets: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ubsafe.cli import main

    if mistake.name == "device index out of range":
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has 8 GPUs")
    monkeypatch.setenv("UBSAFE_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.chdir(tmp_path)
    config = None
    if mistake.config is not None:
        config = tmp_path / "settings.toml"
        config.write_text(mistake.config)
    out = tmp_path / "run"
    args = command_line(mistake, command, datasets[mistake.dataset], out, config)
    result = CliRunner().invoke(main, args)
    output = result.output
    assert result.exit_code != 0, output
    # an expected mistake ends in click's `Error:` (exit 1) or usage error (exit 2), nothing else
    assert isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__} escaped: {result.exception}"
    )
    assert "Traceback" not in output
    assert "Error" in output
    for needle in mistake.says:
        assert needle in output, output
    assert not (out / "run.toml").exists()
    assert not (out / "plan.parquet").exists()


SHELL_CASES = [
    ("dataset path typo", ["run", "effectiveness", "{typo}", "--out", "{out}"], "demo-dta"),
    (
        "perturbation typo",
        ["run", "robustness", "{demo}", "--out", "{out}", "--perturbations", "fog,gausian_noise"],
        "'gausian_noise'",
    ),
    (
        "paper classifiers without weights",
        ["run", "effectiveness", "{demo}", "--out", "{out}", "--classifiers", "sd_filter,q16"],
        "ubsafe weights fetch --classifiers sd_filter,q16",
    ),
]


@pytest.mark.parametrize(("name", "args", "says"), SHELL_CASES, ids=[c[0] for c in SHELL_CASES])
def test_the_shell_sees_one_error_and_no_traceback(
    name: str, args: list[str], says: str, datasets: dict[str, Path], tmp_path: Path
) -> None:
    values = {"typo": datasets["typo"], "demo": datasets["demo"], "out": tmp_path / "run"}
    argv = [a.format(**values) for a in args]
    env = {**os.environ, "UBSAFE_WEIGHTS": str(tmp_path / "no-weights")}
    done = subprocess.run(
        [sys.executable, "-m", "ubsafe", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    assert says in done.stderr
    assert not (tmp_path / "run" / "run.toml").exists()


def test_missing_weights_of_two_classifiers_come_in_one_message(
    datasets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    """Every missing file of sd_filter and q16 (and of the encoders they read), once each."""
    from ubsafe.classifiers import weight_files
    from ubsafe.encoders import weight_files as encoder_files

    weights = tmp_path / "weights"
    monkeypatch.setenv("UBSAFE_WEIGHTS", str(weights))
    # one file is present already: it must not be listed
    present = encoder_files("sd-checker")[0].local_path(weights)
    present.parent.mkdir(parents=True)
    present.write_text("{}")
    result = CliRunner().invoke(
        __import__("ubsafe.cli", fromlist=["main"]).main,
        ["run", "effectiveness", str(datasets["demo"]), "--out", str(tmp_path / "r"),
         "--classifiers", "sd_filter,q16"],
    )  # fmt: skip
    assert result.exit_code == 1
    wanted = {
        wf.local_path(weights)
        for wf in [
            *weight_files("sd_filter"),
            *weight_files("q16"),
            *encoder_files("sd-checker"),
            *encoder_files("vit-l-14-openai"),
        ]
    } - {present}
    listed = [line.strip().split("  ")[0] for line in result.output.splitlines()]
    assert sorted(p for p in listed if p.startswith(str(weights))) == sorted(map(str, wanted))
    assert f"{len(wanted)} weight file(s) missing" in result.output
    assert str(present) not in result.output
    assert "about 2.9 GB" in result.output
