"""The command line answers at once and every command has help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ubsafe.cli import COMMANDS


def test_help_and_version_do_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from ubsafe.cli import main;"
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output;"
        "r = CliRunner().invoke(main, ['--version']); assert '0.' in r.output;"
        "heavy = ('torch', 'open_clip', 'transformers', 'numba', 'pandas', 'h5py');"
        "heavy = [m for m in heavy if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_version_subprocess() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ubsafe", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("ubsafe, version")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(cli, command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
