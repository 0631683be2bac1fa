"""Requests the cluster can run: `ubsafe submit` checks each stage's request against the nodes
`sinfo` reports and refuses one that no node can ever satisfy; `ubsafe status` explains Slurm's
pending reasons and says which never resolve.

The first tests read `sinfo` text written down here (formats Slurm prints); the `slurm` tests run
against the development cluster (`slurm/up`), reading its real limits from `sinfo`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from slurm_fixtures import cluster  # noqa: F401  (fixture)

from ubsafe.launch.cluster import (
    Cluster,
    ImpossibleRequest,
    Request,
    check_request,
    explain_reason,
    node_local,
    parse_gpus,
    parse_sinfo,
    parse_time_limit,
)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("infinite", None),
        ("UNLIMITED", None),
        ("30", 30),
        ("30:00", 30),
        ("4:00:00", 240),
        ("1-00:00:00", 1440),
        ("2-12", 3600),
        ("0:00:30", 1),
    ],
)
def test_time_limits_in_slurm_formats(text: str, minutes: int | None) -> None:
    assert parse_time_limit(text) == minutes


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [("(null)", 0), ("gpu:4", 4), ("gpu:a100:2(S:0-1)", 2), ("gpu:2,gpu:v100:1", 3)],
)
def test_gpus_in_gres(gres: str, gpus: int) -> None:
    assert parse_gpus(gres) == gpus


SINFO = """\
small01|cpu*|16|64000|(null)|2-00:00:00
small02|cpu*|16|64000|(null)|2-00:00:00
gpu01|gpu|32|256000|gpu:a100:4(S:0-1)|1-00:00:00
gpu02|gpu|64|512000|gpu:a100:8(S:0-1)|1-00:00:00
"""


def example_cluster() -> Cluster:
    return Cluster(tuple(parse_sinfo(SINFO)), "cpu")


def test_a_request_a_node_can_run_passes() -> None:
    check_request(Request("embed", "gpu", 32, 200.0, 8, 600), example_cluster())
    check_request(Request("reduce", None, 16, 60.0, 0, 2880), example_cluster())


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (Request("reduce", None, 32, 8.0, 0, 60), ["32 CPUs", "--cpus-per-task 16", "small0"]),
        (Request("embed", "gpu", 8, 8.0, 16, 60), ["16 GPU(s)", "--gpus-per-task 8", "gpu02"]),
        (Request("embed", "gpu", 8, 600.0, 1, 60), ["614400 MB", "--mem 500", "gpu02"]),
        (Request("embed", "gpu", 8, 8.0, 1, 2000), ["2000 min", "--time 1440", "1440 min"]),
        (Request("embed", "cpu", 8, 8.0, 1, 60), ["--gpus-per-task 0 (or a GPU partition)"]),
    ],
)
def test_an_impossible_request_names_the_largest_node_and_the_flag(
    request_: Request, says: list[str]
) -> None:
    with pytest.raises(ImpossibleRequest) as caught:
        check_request(request_, example_cluster())
    message = str(caught.value)
    for needle in says:
        assert needle in message, message


def test_an_unknown_partition_lists_the_partitions() -> None:
    with pytest.raises(ImpossibleRequest, match=r"'a100'.*partitions: cpu, gpu"):
        check_request(Request("embed", "a100", 1, 1.0, 0, 10), example_cluster())


def test_node_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TMPDIR", raising=False)
    assert node_local("/tmp/run") == "/tmp"
    assert node_local("/dev/shm/x") == "/dev/shm"
    monkeypatch.setenv("TMPDIR", "/var/spool/jobtmp")
    assert node_local("/var/spool/jobtmp/run") == "/var/spool/jobtmp"


def test_pending_reasons_say_which_never_resolve() -> None:
    for reason in ("PartitionConfig", "DependencyNeverSatisfied", "ReqNodeNotAvail, May be down"):
        never, meaning = explain_reason(reason)
        assert never and meaning
    for reason in ("Priority", "Resources", "Dependency", "AssocGrpGRES"):
        never, _ = explain_reason(reason)
        assert not never


# --- on the development cluster ---------------------------------------------------------------


def _largest_cpu_node() -> tuple[str, int, int, int]:
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-p", "cpu", "-o", "%N|%c|%m|%G"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    name, cpus, memory, gres = max(rows, key=lambda r: int(r[1]))
    return name, int(cpus), int(memory), parse_gpus(gres)


@pytest.mark.slurm
@pytest.mark.usefixtures("cluster")
def test_submit_refuses_what_no_node_can_run(demo_dir: Path, tmp_path: Path) -> None:
    from slurm_fixtures import ubsafe

    name, cpus, memory, gpus = _largest_cpu_node()
    run_dir = tmp_path / "run"
    cases = [
        (
            ["--cpus-per-task", cpus + 1, "--mem", 1],
            [f"{cpus + 1} CPUs", f"--cpus-per-task {cpus}"],
        ),
        (["--cpus-per-task", 1, "--mem", memory // 1024 + 2], [f"{memory} MB", "--mem "]),
        (
            ["--cpus-per-task", 1, "--mem", 1, "--gpus-per-task", gpus + 1],
            [f"{gpus + 1} GPU(s)", "--gpus-per-task"],
        ),
        ([], ["asks 4 CPUs, 16384 MB memory"]),  # no profile: ubsafe's defaults
    ]
    for flags, says in cases:
        if not flags and cpus >= 4 and memory >= 16384:
            continue  # this cluster's node can run the defaults
        result = ubsafe(
            "submit", "effectiveness", demo_dir, "--out", run_dir, "--partition", "cpu", *flags,
            expect=1,
        )  # fmt: skip
        assert "Traceback" not in result.output
        assert f"The largest node is {name}: {cpus} CPUs, {memory} MB memory" in result.output
        for needle in says:
            assert needle in result.output, result.output
        assert not run_dir.exists(), "nothing is planned or submitted"


@pytest.mark.slurm
@pytest.mark.usefixtures("cluster")
def test_submit_warns_of_a_gpu_stage_without_gpu_and_a_node_local_run_and_strict_refuses(
    demo_dir: Path,
) -> None:
    from slurm_fixtures import ubsafe

    out = Path("/tmp") / f"ubsafe-strict-{id(demo_dir)}"
    flags = ["--profile", "local", "--mem", 1, "--dry-run"]
    result = ubsafe("submit", "effectiveness", demo_dir, "--out", out, *flags)
    assert "Warning: stage embed runs an encoder or image model but asks no GPU" in result.output
    assert f"Warning: --out {out} is under /tmp, which is local to each node" in result.output
    strict = ubsafe("submit", "effectiveness", demo_dir, "--out", out, *flags, "--strict", expect=1)
    assert "refused under --strict" in strict.output and "--gpus-per-task 1" in strict.output
    quiet = ubsafe(
        "submit", "effectiveness", demo_dir, "--out", out, "--profile", "local", "--mem", 1,
        "--partition", "gpu", "--gpus-per-task", 1, "--dry-run",
    )  # fmt: skip
    assert "asks no GPU" not in quiet.output
    assert not out.exists()


@pytest.mark.slurm
@pytest.mark.usefixtures("cluster")
def test_status_explains_a_pending_reason_that_never_resolves(
    demo_dir: Path, tmp_path: Path
) -> None:
    """A run chained after a job that fails: its first array waits on a condition that can no
    longer hold (DependencyNeverSatisfied), and `ubsafe status` says so and what to do."""
    from slurm_fixtures import recorded_job_ids, ubsafe, wait_until

    failing = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-p",
            "cpu",
            "-c",
            "1",
            "--mem",
            "50",
            "-o",
            "/dev/null",
            "--wrap",
            "exit 3",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    profile = tmp_path / "after.toml"
    profile.write_text(
        'partition = "cpu"\ncpus_per_task = 1\nmem_gb = 1\ntime_min = 10\n'
        f'[stage.embed.additional]\ndependency = "afterok:{failing}"\n'
    )
    run_dir = tmp_path / "run"
    ids: list[str] = []
    try:
        ubsafe("submit", "embed", demo_dir, "--out", run_dir, "--profile", profile)
        ids = recorded_job_ids(run_dir)

        def reason() -> str:
            return subprocess.run(
                ["squeue", "-h", "-r", "-j", ids[0], "-o", "%r"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout

        wait_until(lambda: "DependencyNeverSatisfied" in reason(), 60, "the dependency to fail")
        status = ubsafe("status", run_dir, expect=1).output
        assert "PENDING (DependencyNeverSatisfied): NEVER starts by waiting" in status
        assert "failed or was cancelled" in status
        assert f"scancel {ids[0]}" in status
    finally:
        subprocess.run(["scancel", failing, *ids], check=False)
