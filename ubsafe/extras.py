"""Optional parts of ubsafe and the packages each needs: `pip install "ubsafe[NAME]"`.

`setup.cfg`'s `extras_require` lists the same packages (a test keeps them equal); `all` installs
every extra. A classifier's registry entry names the extra it needs (`extra = "nudenet"`), and the
checks before a run refuse a missing one with the install line.
"""

from __future__ import annotations

import importlib.util

#: extra → the importable modules it provides (their PyPI names in setup.cfg)
EXTRAS: dict[str, tuple[str, ...]] = {
    "nudenet": ("nudenet", "onnxruntime"),
    "vlm": ("peft",),
    "generate": ("diffusers",),
}


def missing_modules(extra: str) -> list[str]:
    """The extra's modules that cannot be imported here."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def missing_extra(extra: str, what: str) -> str | None:
    """A one-line problem when `what` needs `extra` and it is not installed, else None."""
    lost = missing_modules(extra)
    if not lost:
        return None
    return (
        f"{what} needs the optional package(s) {', '.join(lost)}. "
        f'fix: pip install "ubsafe[{extra}]" (or "ubsafe[all]")'
    )
