"""What `ubsafe submit` would send, without a cluster: packing shards into array tasks, splitting
arrays at MaxArraySize, cluster profiles and flags, and the sbatch scripts of `--dry-run`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from slurm_fixtures import REPO, ubsafe

from ubsafe.config import ConfigError
from ubsafe.launch.profiles import Resources, load_profile, parse_profile
from ubsafe.launch.slurm import pack, parse_max_array_size, split_arrays


@pytest.mark.parametrize("n", [0, 1, 7, 999, 1000, 1001, 2500, 5000])
@pytest.mark.parametrize("per_task", [None, 1, 3])
def test_packing_puts_each_shard_in_exactly_one_task_in_order(n: int, per_task: int | None) -> None:
    shards = list(range(100, 100 + n))
    tasks = pack(shards, per_task)
    assert [s for task in tasks for s in task] == shards
    if per_task is not None:
        assert all(len(t) == per_task for t in tasks[:-1])
    else:
        # Automatic packing: at most 1000 tasks, and as many as possible (sizes differ by at most
        # one task's worth, so none is idle while another holds several shards).
        assert len(tasks) <= 1000
        assert len(tasks) == min(n, 1000) or n > 1000
        if n > 1000:
            assert len(tasks[0]) == -(-n // 1000)


@pytest.mark.parametrize("n_tasks", [1, 1000, 1001, 1002, 2500, 5000])
@pytest.mark.parametrize("max_array_size", [1, 5, 1001])
def test_split_arrays_keeps_every_index_below_max_array_size(
    n_tasks: int, max_array_size: int
) -> None:
    tasks = [[i] for i in range(n_tasks)]
    arrays = split_arrays(tasks, max_array_size)
    assert [t for a in arrays for t in a] == tasks
    # Slurm accepts indices 0..MaxArraySize-1: an array of MaxArraySize tasks is the largest.
    assert all(1 <= len(a) <= max_array_size for a in arrays)
    assert len(arrays) == -(-n_tasks // max_array_size)


def test_max_array_size_is_read_from_scontrol_text() -> None:
    text = "MailProg                = /bin/true\nMaxArraySize            = 5000\nMaxJobCount = 10\n"
    assert parse_max_array_size(text) == 5000
    assert parse_max_array_size("MaxJobCount = 10\n") is None


def test_flags_override_profile_and_stage_tables() -> None:
    profile = parse_profile(
        {
            "partition": "gpu",
            "gpus_per_task": 1,
            "cpus_per_task": 8,
            "mem_gb": 32,
            "setup": ["module load cuda"],
            "env": {"HDF5_USE_FILE_LOCKING": "FALSE"},
            "stage": {"reduce": {"partition": "cpu", "mem_gb": 64}},
        },
        "site",
        origin="test profile",
    )
    embed = profile.for_stage("embed", {"cpus_per_task": 2, "partition": None})
    assert (embed.partition, embed.gpus_per_task, embed.cpus_per_task, embed.mem_gb) == (
        "gpu",
        1,
        2,
        32.0,
    )
    assert embed.setup == ("module load cuda",)
    assert embed.env == (("HDF5_USE_FILE_LOCKING", "FALSE"),)
    reduce = profile.for_stage("reduce", {})
    assert (reduce.partition, reduce.mem_gb, reduce.cpus_per_task) == ("cpu", 64.0, 8)
    # A flag beats the stage table too.
    assert profile.for_stage("reduce", {"mem_gb": 4.0}).mem_gb == 4.0


def test_cpu_only_stages_never_ask_for_gpus() -> None:
    profile = parse_profile({"partition": "gpu", "gpus_per_task": 2}, "site", origin="test")
    for stage in ("fit", "reduce", "compare"):
        assert profile.for_stage(stage, {"gpus_per_task": 1}).gpus_per_task == 0
    assert profile.for_stage("embed", {"gpus_per_task": 1}).gpus_per_task == 1
    assert profile.for_stage("score", {}).gpus_per_task == 2


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"partitoin": "gpu"}, ["partitoin", "valid:", "partition"]),
        ({"cpus_per_task": "8"}, ["cpus_per_task", "'8'", "must be a int"]),
        ({"time_min": 0}, ["time_min", "at least 1"]),
        ({"stage": {"embedd": {"mem_gb": 1}}}, ["[stage.embedd]", "names no stage", "embed"]),
        ({"stage": {"fit": {"gpus": 1}}}, ["[stage.fit]", "gpus", "gpus_per_task"]),
        ({"env": {"X": [1]}}, ["[env] X", "string or a number"]),
    ],
)
def test_profile_errors_name_the_file_the_setting_and_what_is_valid(
    tmp_path: Path, table: dict[str, object], words: list[str]
) -> None:
    import tomli_w

    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(table))
    with pytest.raises(ConfigError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_profiles_are_found_by_name_and_unknown_names_list_the_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mycluster.toml").write_text('partition = "a100"\ntime_min = 30\n')
    monkeypatch.setenv("UBSAFE_HPC_DIR", str(tmp_path))
    profile = load_profile("mycluster")
    assert (profile.defaults.partition, profile.defaults.time_min) == ("a100", 30)
    with pytest.raises(ConfigError, match=r"available: .*local.*mycluster.*university-gpu"):
        load_profile("nosuch")


def test_shipped_profiles_load_and_the_example_keeps_cpu_stages_off_gpus() -> None:
    assert (REPO / "hpc" / "local.toml").is_file()
    local = load_profile("local")
    assert local.defaults.partition == "cpu"
    assert dict(local.defaults.env)["HDF5_USE_FILE_LOCKING"] == "FALSE"
    example = load_profile("university-gpu")
    assert example.description
    assert example.for_stage("embed", {}).gpus_per_task >= 1
    assert example.for_stage("embed", {}).setup  # module load lines
    for stage in ("fit", "reduce"):
        resources = example.for_stage(stage, {})
        assert resources.gpus_per_task == 0
        assert resources.partition != example.defaults.partition


def test_resources_reject_booleans_as_numbers() -> None:
    with pytest.raises(ConfigError, match="gpus_per_task"):
        Resources().updated({"gpus_per_task": True})


# --- dry run -------------------------------------------------------------------------------------


def _scripts(output: str) -> list[str]:
    """The sbatch scripts in `ubsafe submit --dry-run` output, each from its #!/bin/bash line."""
    return ["#!/bin/bash" + part.split("\n# --- ")[0] for part in output.split("#!/bin/bash")[1:]]


def _directive(script: str, name: str) -> str | None:
    match = re.search(rf"^#SBATCH --{name}(?:=(.*))?$", script, re.MULTILINE)
    if not match:
        return None
    return match.group(1) or ""


def test_dry_run_splits_at_max_array_size_and_writes_nothing(
    demo_dir: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "site.toml"
    profile.write_text(
        'partition = "gpu"\ncpus_per_task = 2\nmax_array_size = 10\n'
        'setup = ["module load cuda/12.1"]\n[env]\nHDF5_USE_FILE_LOCKING = "FALSE"\n'
    )
    out = tmp_path / "run"
    # 132 demo samples in shards of 4: 33 shards, one per task, arrays of at most 10 tasks.
    result = ubsafe(
        "submit", "embed", demo_dir, "--out", out, "--profile", profile,
        "--shard-size", 4, "--shards-per-task", 1, "--gpus-per-task", 1, "--dry-run",
    )  # fmt: skip
    assert not out.exists(), "a dry run must leave nothing behind"
    scripts = _scripts(result.output)
    assert [_directive(s, "array") for s in scripts] == ["0-9%10", "0-9%10", "0-9%10", "0-2%3"]
    for script in scripts:
        assert _directive(script, "partition") == "gpu"
        assert _directive(script, "cpus-per-task") == "2"
        assert _directive(script, "gpus-per-node") == "1"
        assert _directive(script, "output") == f"{out.resolve()}/logs/slurm/embed/%A_%a_0_log.out"
        assert "module load cuda/12.1" in script
        assert 'export HDF5_USE_FILE_LOCKING="FALSE"' in script
        assert "export NUMBA_NUM_THREADS=${SLURM_CPUS_PER_TASK:-2}" in script
        assert "-m submitit.core._submit" in script
    assert "4 sbatch call(s) for 33 shard(s)" in result.output


def test_dry_run_chains_stages_and_keeps_gpus_off_cpu_stages(
    demo_dir: Path, tmp_path: Path
) -> None:
    result = ubsafe(
        "submit", "effectiveness", demo_dir, "--out", tmp_path / "run", "--partition", "gpu",
        "--gpus-per-task", 1, "--cpus-per-task", 2, "--time", 30, "--mem", 3, "--shard-size", 64,
        "--dry-run",
    )  # fmt: skip
    headers = re.findall(r"^# --- (\w+): sbatch", result.output, re.MULTILINE)
    assert headers == ["embed", "fit", "score", "reduce", "report"]
    scripts = dict(zip(headers, _scripts(result.output), strict=True))
    assert _directive(scripts["embed"], "dependency") is None
    assert _directive(scripts["fit"], "dependency") == "'afterany:<job ids of embed>'"
    assert _directive(scripts["reduce"], "dependency") == "'afterany:<job ids of score>'"
    # The report only after a reduce that succeeded, and cancelled when it failed.
    assert _directive(scripts["report"], "dependency") == "'afterok:<job ids of reduce>'"
    assert _directive(scripts["report"], "kill-on-invalid-dep") == "yes"
    assert _directive(scripts["reduce"], "kill-on-invalid-dep") is None
    assert _directive(scripts["embed"], "gpus-per-node") == "1"
    assert _directive(scripts["score"], "gpus-per-node") == "1"
    assert _directive(scripts["fit"], "gpus-per-node") is None
    assert _directive(scripts["reduce"], "gpus-per-node") is None
    assert _directive(scripts["report"], "gpus-per-node") is None
    for script in scripts.values():
        assert _directive(script, "time") == "30"
        assert _directive(script, "mem") == "3072MB"
        # submitit's requeue signal comes well before a 30-minute limit.
        assert _directive(script, "signal") == "USR2@90"
    # 132 samples in shards of 64: three shards, one per task, as one array.
    assert _directive(scripts["embed"], "array") == "0-2%3"
    assert _directive(scripts["fit"], "array") is None  # a single task is a plain job


def test_submit_without_a_partition_says_how_to_give_one(demo_dir: Path, tmp_path: Path) -> None:
    result = ubsafe("submit", "embed", demo_dir, "--out", tmp_path / "run", expect=1)
    assert "--partition" in result.output and "sinfo" in result.output
