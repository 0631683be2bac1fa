"""Weight files: where each lives on its real home, where it lands locally, and fetching it.

Compute nodes are often offline. `ubsafe weights fetch --to DIR` downloads every file once (on a
login node); loaders then read `DIR/hf/<repo>/<filename>` only, with the hub switched off. A missing
file stops the command before any job, naming the file and the fix.

Every file is pinned where its hub revision (commit) and sha256 are known (`pins.toml`): fetch
downloads that revision and checks the file; loaders check it too (once per file version: a
`.sha256-ok` stamp beside it remembers the size and mtime that were checked), unless verification
is switched off (`--no-verify`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PINS_FILE = Path(__file__).with_name("pins.toml")

#: Environment switch: `UBSAFE_VERIFY_WEIGHTS=0` is `--no-verify` for every process it reaches
#: (the tests use it: they build small stand-ins under the real repositories' names).
VERIFY_ENV = "UBSAFE_VERIFY_WEIGHTS"
_verify: bool | None = None


def configure(*, verify: bool | None) -> None:
    """Switch checksum checks of loaded weight files on or off for this process (None: back to
    the environment's `UBSAFE_VERIFY_WEIGHTS`, default on)."""
    global _verify
    _verify = verify


def verifying() -> bool:
    """Whether loaders check checksums in this process."""
    if _verify is not None:
        return _verify
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no")


@functools.cache
def pins() -> tuple[dict[str, str], dict[str, str]]:
    """(repo → pinned revision, "repo/filename" → sha256) from pins.toml."""
    with open(PINS_FILE, "rb") as fh:
        data = tomllib.load(fh)
    return dict(data.get("revisions", {})), dict(data.get("sha256", {}))


@dataclass(frozen=True)
class WeightFile:
    """One file in a Hugging Face repository (the home of every weight ubsafe uses)."""

    repo: str
    filename: str
    revision: str | None = None
    sha256: str | None = None
    repo_type: str = "model"
    #: a plain download address (e.g. a GitHub release asset) instead of the Hugging Face repo;
    #: such a file lands in `<weights>/url/<repo>/<filename>`
    source_url: str | None = None
    #: download size in bytes, where known (shown by preflight and `ubsafe weights fetch`)
    size: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        revisions, checksums = pins()
        if self.revision is None and self.repo in revisions:
            object.__setattr__(self, "revision", revisions[self.repo])
        if self.sha256 is None:
            object.__setattr__(self, "sha256", checksums.get(f"{self.repo}/{self.filename}"))

    def local_path(self, weights_dir: str | os.PathLike[str]) -> Path:
        home = "url" if self.source_url else "hf"
        return Path(weights_dir) / home / self.repo / self.filename

    @property
    def url(self) -> str:
        if self.source_url:
            return self.source_url
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


def require(
    owner: str,
    files: Iterable[WeightFile],
    weights_dir: str | os.PathLike[str],
    *,
    verify: bool | None = None,
) -> None:
    """Raise `MissingWeightsError` unless every file is present, and `WeightsMismatch` when one
    does not match its recorded checksum (checked unless `verify` — default `verifying()` — is
    off)."""
    weights_dir = Path(weights_dir)
    files = list(files)
    missing = [(wf, wf.local_path(weights_dir)) for wf in files]
    missing = [(wf, path) for wf, path in missing if not path.is_file()]
    if missing:
        raise MissingWeightsError(owner, missing, weights_dir)
    if verifying() if verify is None else verify:
        for wf in files:
            verify_once(wf, wf.local_path(weights_dir))


class WeightsMismatch(ValueError):
    """A weight file is not the one its pin names (a different or damaged download)."""


class FetchError(RuntimeError):
    """Weight files could not be downloaded; the message says which and what to do."""


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(wf: WeightFile, path: Path) -> None:
    """Check a file against its recorded checksum, when one is recorded."""
    if wf.sha256 and sha256_of(path) != wf.sha256:
        raise WeightsMismatch(
            f"{path}: checksum does not match {wf.url} (expected sha256 {wf.sha256}); "
            "delete it and run `ubsafe weights fetch` again (or pass --no-verify to use it anyway)"
        )


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256-ok")


def verify_once(wf: WeightFile, path: Path) -> None:
    """`verify`, skipped when a stamp shows this very file (size, mtime) was checked before."""
    if not wf.sha256:
        return
    info = path.stat()
    expected = f"{wf.sha256} {info.st_size} {info.st_mtime_ns}\n"
    stamp = _stamp(path)
    try:
        if stamp.read_text(encoding="utf-8") == expected:
            return
    except OSError:
        pass
    verify(wf, path)
    with contextlib.suppress(OSError):  # a read-only weights directory: checked again next time
        stamp.write_text(expected, encoding="utf-8")


def fetch(
    files: Iterable[WeightFile],
    to: str | os.PathLike[str],
    *,
    force: bool = False,
    check: bool = True,
) -> list[Path]:
    """Download `files` at their pinned revisions into `to` and check their checksums; skip those
    already present (checked too). Needs the network; `FetchError` says what failed."""
    to = Path(to)
    done = []
    for wf in files:
        target = wf.local_path(to)
        if target.is_file() and not force:
            if check:
                verify_once(wf, target)
            done.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        path = _download(wf, to)
        if check:
            verify_once(wf, path)
        done.append(path)
    return done


def _download_url(wf: WeightFile, to: Path) -> Path:
    import shutil
    import urllib.request

    from ubsafe import atomic

    target = wf.local_path(to)
    try:
        with (
            urllib.request.urlopen(wf.url, timeout=60) as response,
            atomic.atomic_path(target) as tmp,
            open(tmp, "wb") as fh,
        ):
            shutil.copyfileobj(response, fh, 1 << 20)
    except OSError as exc:
        raise FetchError(
            f"cannot download {wf.url}: {type(exc).__name__}: {exc}\n"
            f"fix: check the network (this machine may be offline: fetch on a login node), or "
            f"download it by hand to {target}"
        ) from None
    return target


def _download(wf: WeightFile, to: Path) -> Path:
    if wf.source_url:
        return _download_url(wf, to)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise FetchError(
            "huggingface_hub is not installed: `pip install huggingface_hub`, then fetch again"
        ) from None
    from ubsafe.redact import redact

    try:
        return Path(
            hf_hub_download(
                repo_id=wf.repo,
                filename=wf.filename,
                revision=wf.revision,
                repo_type=wf.repo_type,
                local_dir=to / "hf" / wf.repo,
                token=os.environ.get("HF_TOKEN") or None,
            )
        )
    except Exception as exc:  # offline, refused, gated, missing: every failure is explained
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        why = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        hint = (
            "HF_HUB_OFFLINE is set: unset it, "
            if offline
            else "check the network (this machine may be offline: fetch on a login node), "
        )
        raise FetchError(
            f"cannot download {wf.url}: {type(exc).__name__}: {why}\n"
            f"fix: {hint}and for gated repositories export HF_TOKEN; files already fetched "
            f"stay in {to}"
        ) from None


def offline_hub() -> None:
    """Switch the Hugging Face clients off the network: loaders read the weights directory only."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # huggingface_hub reads the variable once, at import: set its constant too if already imported
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
