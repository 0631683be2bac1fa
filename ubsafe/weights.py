"""Weight files: where each lives on its real home, where it lands locally, and fetching it.

Compute nodes are often offline. `ubsafe weights fetch --to DIR` downloads every file once (on a
login node); loaders then read `DIR/hf/<repo>/<filename>` only, with the hub switched off. A missing
file stops the command before any job, naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightFile:
    """One file in a Hugging Face repository (the home of every weight ubsafe uses)."""

    repo: str
    filename: str
    revision: str | None = None
    sha256: str | None = None
    repo_type: str = "model"

    def local_path(self, weights_dir: str | os.PathLike[str]) -> Path:
        return Path(weights_dir) / "hf" / self.repo / self.filename

    @property
    def url(self) -> str:
        rev = self.revision or "main"
        return f"https://huggingface.co/{self.repo}/resolve/{rev}/{self.filename}"


class MissingWeightsError(FileNotFoundError):
    """Weight files are absent from the weights directory."""

    def __init__(self, owner: str, missing: list[tuple[WeightFile, Path]], weights_dir: Path):
        self.owner = owner
        self.missing = missing
        lines = [f"{owner}: weight files missing from {weights_dir}:"]
        lines += [f"  {path}  (from {wf.url})" for wf, path in missing]
        lines.append(
            f"fix: run `ubsafe weights fetch --to {weights_dir}` on a machine with internet access "
            "(and a Hugging Face token for gated repos), or pass --weights-dir to where they are"
        )
        super().__init__("\n".join(lines))


def require(owner: str, files: Iterable[WeightFile], weights_dir: str | os.PathLike[str]) -> None:
    """Raise `MissingWeightsError` unless every file is present (and matches its checksum)."""
    weights_dir = Path(weights_dir)
    missing = [(wf, wf.local_path(weights_dir)) for wf in files]
    missing = [(wf, path) for wf, path in missing if not path.is_file()]
    if missing:
        raise MissingWeightsError(owner, missing, weights_dir)


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(wf: WeightFile, path: Path) -> None:
    """Check a file against its recorded checksum, when one is recorded."""
    if wf.sha256 and sha256_of(path) != wf.sha256:
        raise ValueError(
            f"{path}: checksum does not match {wf.url} (expected sha256 {wf.sha256}); "
            "delete it and run `ubsafe weights fetch` again"
        )


def fetch(
    files: Iterable[WeightFile], to: str | os.PathLike[str], *, force: bool = False
) -> list[Path]:
    """Download `files` from the hub into `to`; skip those already present. Needs the network."""
    from huggingface_hub import hf_hub_download

    to = Path(to)
    done = []
    for wf in files:
        target = wf.local_path(to)
        if target.is_file() and not force:
            done.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        downloaded = hf_hub_download(
            repo_id=wf.repo,
            filename=wf.filename,
            revision=wf.revision,
            repo_type=wf.repo_type,
            local_dir=to / "hf" / wf.repo,
            token=os.environ.get("HF_TOKEN") or None,
        )
        path = Path(downloaded)
        verify(wf, path)
        done.append(path)
    return done


def offline_hub() -> None:
    """Switch the Hugging Face clients off the network: loaders read the weights directory only."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # huggingface_hub reads the variable once, at import: set its constant too if already imported
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
