"""Numba's kernel cache: a writable place for array tasks, and one warm-up shared by all of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ubsafe.kernels import cache


def fake_run(root: Path, cache_dir: str = "") -> Any:
    return SimpleNamespace(root=root, config=SimpleNamespace(cache_dir=cache_dir))


def test_writable_package_keeps_numbas_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    package = tmp_path / "pkg"
    package.mkdir()
    assert cache.cache_dir_for(fake_run(tmp_path / "run"), package_dir=package) is None


def test_read_only_package_uses_the_shared_cache_dir_or_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    # (root ignores file modes, so the read-only package folder is stated rather than made)
    monkeypatch.setattr(cache, "package_cache_writable", lambda package_dir: False)
    read_only_package = tmp_path / "pkg"
    run = fake_run(tmp_path / "run")
    assert cache.cache_dir_for(run, package_dir=read_only_package) == tmp_path / "run/numba-cache"
    shared = fake_run(tmp_path / "run", cache_dir=str(tmp_path / "shared"))
    chosen = cache.configure(shared, package_dir=read_only_package)
    assert chosen == tmp_path / "shared" / "numba" and chosen.is_dir()
    assert os.environ["NUMBA_CACHE_DIR"] == str(chosen)


def test_user_setting_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.cache_dir_for(fake_run(tmp_path / "run")) == tmp_path / "mine"


WARM = """
import sys, time
from pathlib import Path
from types import SimpleNamespace
from ubsafe.kernels import cache
run = SimpleNamespace(root=Path(sys.argv[1]), config=SimpleNamespace(cache_dir=""))
start = time.perf_counter()
warmed = cache.warm_once(run)
from ubsafe.kernels import warm_up
warm_up()
print(warmed, round(time.perf_counter() - start, 2))
"""


@pytest.mark.slow
def test_first_task_compiles_the_next_one_loads(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}

    def task() -> tuple[str, float]:
        out = subprocess.run(
            [sys.executable, "-c", WARM, str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return out[0], float(out[1])

    first, cold = task()
    assert first == "True"
    assert list((tmp_path / "numba").glob("warm-*"))
    assert list((tmp_path / "numba").rglob("*.nbi")), "numba wrote no cache index"
    second, warm = task()
    assert second == "False"
    print(f"kernels: first task {cold:.1f} s (compiles), next task {warm:.1f} s (loads)")
    assert warm < cold / 2, (cold, warm)
