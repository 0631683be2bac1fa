"""What the cluster can run: its nodes per partition (`sinfo`), checked against each stage's request
before anything is submitted, and what Slurm's pending reasons mean.

A request that no node of its partition can satisfy (CPUs, memory, GPUs, time limit) is accepted by
`sbatch` on many clusters and then stays PENDING forever (`PartitionConfig`): `ubsafe submit`
refuses it instead, naming the largest node and the flag to change. Requests that can run but are
probably not what the user meant (a GPU stage without a GPU, a run directory on a node-local path)
are warnings, refusals under `--strict`.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ubsafe.config import ConfigError

_TIMEOUT_S = 30

#: Folders that live on each node's own disk or memory (what a job writes there stays on its node).
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run/user", "/scratch/local", "/local")


class ImpossibleRequest(ConfigError):
    """A stage asks for more than any node of its partition has; the message names the flags."""


@dataclass(frozen=True)
class Node:
    """One node of a partition, as `sinfo -N` reports it."""

    name: str
    partition: str
    cpus: int
    memory_mb: int
    gpus: int
    #: the partition's time limit in minutes (None: no limit)
    time_limit_min: int | None

    def describe(self) -> str:
        limit = (
            "no time limit"
            if self.time_limit_min is None
            else f"time limit {self.time_limit_min} min"
        )
        return (
            f"{self.name}: {self.cpus} CPUs, {self.memory_mb} MB memory "
            f"({self.memory_mb / 1024:.1f} GB), {self.gpus} GPU(s), {limit}"
        )


def parse_time_limit(text: str) -> int | None:
    """Slurm's time format (`infinite`, `MM`, `MM:SS`, `HH:MM:SS`, `D-HH[:MM[:SS]]`) in minutes."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days = 0
    if "-" in text:
        day_text, _, text = text.partition("-")
        days = int(day_text)
        parts = [int(p) for p in text.split(":")]
        hours, minutes, seconds = [*parts, 0, 0][:3]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, (minutes, seconds) = 0, parts
        else:
            hours, minutes, seconds = parts[:3]
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def parse_gpus(gres: str) -> int:
    """GPUs in a GRES string: `gpu:4`, `gpu:a100:2(S:0-1)`, `gpu:2,gpu:v100:1`; 0 for `(null)`."""
    total = 0
    for item in re.split(r",(?![^(]*\))", gres):
        item = re.sub(r"\(.*?\)", "", item.strip())
        fields = item.split(":")
        if fields[0] != "gpu" or len(fields) < 2:
            continue
        count = fields[-1]
        total += int(count) if count.isdigit() else 1
    return total


def parse_sinfo(text: str) -> list[Node]:
    """Nodes from `sinfo -h -N -o '%N|%P|%c|%m|%G|%l'` (the default partition ends in `*`)."""
    nodes = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 6:
            continue
        name, partition, cpus, memory, gres, limit = fields
        try:
            nodes.append(
                Node(
                    name=name,
                    partition=partition.rstrip("*"),
                    cpus=int(cpus.rstrip("+")),
                    memory_mb=int(memory.rstrip("+")),
                    gpus=parse_gpus(gres),
                    time_limit_min=parse_time_limit(limit),
                )
            )
        except ValueError:
            continue
    return nodes


@dataclass(frozen=True)
class Cluster:
    """Every node of every partition, and the default partition."""

    nodes: tuple[Node, ...]
    default_partition: str | None

    def partitions(self) -> list[str]:
        return sorted({n.partition for n in self.nodes})

    def in_partition(self, partition: str | None) -> list[Node]:
        name = partition or self.default_partition
        return [n for n in self.nodes if n.partition == name]


def _ask_slurm(command: list[str]) -> subprocess.CompletedProcess[str] | None:
    """A Slurm query's output; None when the command is absent, cannot start or times out."""
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def read_cluster() -> Cluster | None:
    """The cluster's nodes from `sinfo`; None where there is no Slurm to ask (no check then)."""
    done = _ask_slurm(["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G|%l"])
    if done is None or done.returncode != 0:
        return None
    default = next(
        (line.split("|")[1][:-1] for line in done.stdout.splitlines() if "*|" in line), None
    )
    nodes = parse_sinfo(done.stdout)
    return Cluster(tuple(nodes), default) if nodes else None


@dataclass(frozen=True)
class Request:
    """What one array task of a stage asks for."""

    stage: str
    partition: str | None
    cpus: int
    mem_gb: float
    gpus: int
    time_min: int

    @property
    def memory_mb(self) -> int:
        # as `executor_parameters` writes --mem
        return max(1, round(self.mem_gb * 1024))


def check_request(request: Request, cluster: Cluster) -> None:
    """Refuse a request that no node of its partition can ever run, naming the largest node."""
    nodes = cluster.in_partition(request.partition)
    where = request.partition or f"{cluster.default_partition} (the default)"
    if not nodes:
        raise ImpossibleRequest(
            f"stage {request.stage}: partition {request.partition!r} does not exist on this "
            f"cluster; partitions: {', '.join(cluster.partitions())}. fix: --partition P"
        )
    if any(_fits(request, node) for node in nodes):
        return
    largest = max(nodes, key=lambda n: (n.gpus, n.cpus, n.memory_mb))
    fixes = []
    most_cpus = max(n.cpus for n in nodes)
    most_memory = max(n.memory_mb for n in nodes)
    most_gpus = max(n.gpus for n in nodes)
    limits = [n.time_limit_min for n in nodes]
    longest = None if None in limits else max(x for x in limits if x is not None)
    if request.cpus > most_cpus:
        fixes.append(f"--cpus-per-task {most_cpus}")
    if request.memory_mb > most_memory:
        fixes.append(f"--mem {math.floor(most_memory / 1024 * 10) / 10:g}")
    if request.gpus > most_gpus:
        fixes.append(
            f"--gpus-per-task {most_gpus}"
            if most_gpus
            else "--gpus-per-task 0 (or a GPU partition)"
        )
    if longest is not None and request.time_min > longest:
        fixes.append(f"--time {longest}")
    if not fixes:  # each part fits some node, but no node has them all
        fixes.append(f"a request within {largest.name}'s limits")
    raise ImpossibleRequest(
        f"stage {request.stage} asks {request.cpus} CPUs, {request.memory_mb} MB memory, "
        f"{request.gpus} GPU(s) and {request.time_min} min per task, but no node of partition "
        f"{where} can ever give that (Slurm would keep it PENDING for PartitionConfig). "
        f"The largest node is {largest.describe()}. "
        f"fix: {', '.join(fixes)} (flags override the profile; or another --partition)"
    )


def _fits(request: Request, node: Node) -> bool:
    return (
        request.cpus <= node.cpus
        and request.memory_mb <= node.memory_mb
        and request.gpus <= node.gpus
        and (node.time_limit_min is None or request.time_min <= node.time_limit_min)
    )


def node_local(path: str | os.PathLike[str]) -> str | None:
    """The node-local folder `path` lies in (/tmp, /dev/shm, $TMPDIR, a tmpfs mount), or None."""
    resolved = Path(path).expanduser().resolve()
    candidates = list(NODE_LOCAL)
    if os.environ.get("TMPDIR"):
        candidates.append(os.environ["TMPDIR"])
    candidates += _tmpfs_mounts()
    for folder in candidates:
        try:
            base = Path(folder).resolve()
        except OSError:
            continue
        if base != Path("/") and (resolved == base or base in resolved.parents):
            return str(folder)
    return None


def _tmpfs_mounts() -> list[str]:
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    return [f.split()[1] for f in lines if len(f.split()) > 2 and f.split()[2] == "tmpfs"]


def placement_warnings(paths: Iterable[tuple[str, str]]) -> list[str]:
    """A warning for each (what, path) on a node-local folder."""
    warnings = []
    for what, path in paths:
        folder = node_local(path)
        if folder is not None:
            warnings.append(
                f"{what} {path} is under {folder}, which is local to each node: jobs on other "
                "nodes neither see what was planned here nor leave their results here. fix: a "
                "folder on a filesystem the compute nodes share (scratch or project space)"
            )
    return warnings


#: Pending reasons that never resolve by waiting: reason → what it means and what to do.
NEVER_RESOLVES: dict[str, str] = {
    "PartitionConfig": "the request exceeds what the partition's nodes have (CPUs, memory, "
    "GPUs); scancel and submit again with a smaller request",
    "PartitionNodeLimit": "the job asks more nodes than the partition allows; scancel and resubmit",
    "PartitionTimeLimit": "the time limit asked exceeds the partition's; scancel and resubmit "
    "with a smaller --time",
    "DependencyNeverSatisfied": "a job it depends on failed or was cancelled, so its "
    "condition (afterok, ...) can never hold; scancel it (and fix what it waited for)",
    "ReqNodeNotAvail": "a node the job needs is down, drained or reserved; it waits until "
    "an administrator returns the node (`sinfo -R` says why), which may be never",
    "BadConstraints": "no node has the requested features (--constraint); scancel and resubmit",
    "InvalidAccount": "the account is not valid for you; scancel and resubmit with --account",
    "InvalidQOS": "the QOS is not valid for you; scancel and resubmit with another qos",
    "QOSJobLimit": "the QOS does not allow this job at all; scancel and resubmit",
    "JobHeldAdmin": "an administrator holds the job; ask them, or scancel it",
    "JobHeldUser": "the job is held (sbatch --hold or scontrol hold); `scontrol release` it",
    "launch failed requeued held": "the job failed to start and was held; `scontrol release` "
    "it after checking the node, or scancel it",
}

#: Common reasons that resolve by themselves.
RESOLVES: dict[str, str] = {
    "Priority": "other jobs come first",
    "Resources": "waiting for free CPUs, memory or GPUs",
    "Dependency": "waiting for the previous stage's jobs to end",
    "BeginTime": "its start time has not come yet",
    "JobArrayTaskLimit": "the array runs at most --array-parallelism tasks at once",
    "QOSMaxJobsPerUserLimit": "your QOS's job limit; others start as yours end",
    "AssocGrpCpuLimit": "your association's CPU limit; it starts as your other jobs end",
    "AssocGrpGRES": "your association's GPU limit; it starts as your other jobs end",
    "Reservation": "waiting for its reservation to start",
}


def explain_reason(reason: str) -> tuple[bool, str]:
    """(never resolves by waiting?, what it means) for a pending reason of `squeue %r`."""
    key = reason.split(",")[0].strip()
    if key in NEVER_RESOLVES:
        return True, NEVER_RESOLVES[key]
    if key in RESOLVES:
        return False, RESOLVES[key]
    if key.startswith(("AssocGrp", "AssocMax", "QOSGrp", "QOSMax")):
        return False, "a limit of your account or QOS; it starts as your other jobs end"
    return False, "see `man squeue` (JOB REASON CODES)"


def pending_reasons(job_ids: Sequence[str]) -> dict[str, dict[str, int]] | None:
    """Per array job id, how many of its pending tasks wait for each reason (`squeue`)."""
    if not job_ids:
        return None
    done = _ask_slurm(
        ["squeue", "-h", "-r", "-t", "PENDING", "-o", "%F|%r", "-j", ",".join(job_ids)]
    )
    if done is None:
        return None
    if done.returncode != 0:
        return {} if "Invalid job id" in done.stderr else None
    reasons: dict[str, dict[str, int]] = {}
    for line in done.stdout.splitlines():
        job, _, reason = line.strip().partition("|")
        if job and reason:
            counts = reasons.setdefault(job, {})
            counts[reason] = counts.get(reason, 0) + 1
    return reasons


def check_submission(
    requests: Sequence[Request],
    *,
    gpu_stages: Sequence[str],
    paths: Sequence[tuple[str, str]],
    device: str,
    strict: bool,
    cluster: Cluster | None,
) -> list[str]:
    """Refuse what can never run; return the warnings (refused too under `strict`).

    `gpu_stages`: the stages that run an encoder or an image model (a GPU makes them fast);
    `paths`: (what, path) of the run directory and the embedding cache.
    """
    if cluster is not None:
        for request in requests:
            check_request(request, cluster)
    warnings = []
    if device != "cpu":
        for request in requests:
            if request.stage in gpu_stages and request.gpus == 0:
                warnings.append(
                    f"stage {request.stage} runs an encoder or image model but asks no GPU: it "
                    "will run on CPUs only, many times slower. fix: --gpus-per-task 1 (and a GPU "
                    "--partition), or --device cpu to say that CPUs are meant"
                )
    warnings += placement_warnings(paths)
    if warnings and strict:
        raise ConfigError("refused under --strict:\n" + "\n".join(f"  {w}" for w in warnings))
    return warnings
