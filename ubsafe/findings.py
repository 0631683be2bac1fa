"""What a run's numbers are worth, and what they say, in a few lines.

- `caveats(config)`: sentences that must come before any number when the data, the encoder or the
  generators cannot support conclusions (the procedural demo data, an encoder or generators with
  random weights), and that generated images are one draw of a random process. The
  reduce stores them in `results/summary.json`, so the report says them too.
- `findings(results_dir)`: three lines read from `results/`: the largest real-vs-AI F1 gap with
  its interval and p-value, and the weakest corruption and attack (lowest Robust Accuracy).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ubsafe.config import RunConfig


def caveats(config: RunConfig) -> list[str]:
    """Why this run's numbers may mean nothing, from the dataset and the encoder entry."""
    from ubsafe.data.demo import is_procedural
    from ubsafe.encoders import get_entry

    notes = []
    if is_procedural(config.dataset):
        notes.append(
            "The data is ubsafe's procedural demo set: drawn shapes and motifs, not photographs "
            "or generated images; its 'real' and 'AI-generated' sources differ only by a drawn "
            "style."
        )
    try:
        entry = get_entry(config.encoder)
    except (KeyError, ValueError):
        entry = None
    from ubsafe.stages.preflight import encoders_needed

    used = encoders_needed(config) if entry is not None else []
    if entry is not None and entry.init == "deterministic" and config.encoder in used:
        notes.append(
            f"The encoder '{config.encoder}' has pseudo-random, untrained weights: its embeddings "
            "carry no meaning, so these numbers exercise the pipeline and say nothing about any "
            "real classifier."
        )
    notes.extend(_generator_caveats(config))
    return notes


def _generator_caveats(config: RunConfig) -> list[str]:
    from ubsafe.generate.registry import get_generator
    from ubsafe.targets import runs_stage

    if not runs_stage(config.target, "generate"):
        return []
    notes = []
    tiny = []
    for name in config.generators:
        try:
            if get_generator(name).tiny:
                tiny.append(name)
        except (KeyError, ValueError):
            continue
    if tiny:
        names = ", ".join(f"'{name}'" for name in tiny)
        subject = f"The generators {names} are" if len(tiny) > 1 else f"The generator {names} is"
        notes.append(
            f"{subject} tiny models with pseudo-random, untrained weights: "
            "their images are noise, so these numbers exercise the pipeline and say nothing "
            "about any real generator or mitigation."
        )
    notes.append(
        "Generated images are one draw of a random process: each image's starting latent comes "
        "from its prompt's seed and its image index, and other seeds give other images and "
        "other rates. The intervals resample prompts; they do not redraw images."
    )
    return notes


def findings(results_dir: str | Path) -> list[str]:
    """Up to three lines on what the results show (none when they hold nothing to compare)."""
    import pandas as pd

    results = Path(results_dir)
    lines = []
    gaps_path = results / "gaps.csv"
    if gaps_path.is_file():
        gaps = pd.read_csv(gaps_path)
        f1 = gaps[(gaps["metric"] == "f1") & (gaps["category"] == "overall")]
        f1 = f1[f1["diff"].notna()]
        if len(f1):
            row = f1.loc[f1["diff"].abs().sort_values(ascending=False, kind="stable").index[0]]
            lines.append(
                f"Largest real-vs-AI F1 gap: {row.classifier}, {row.real:.3f} on real-world vs "
                f"{row.ai:.3f} on AI-generated images (difference {row['diff']:+.3f}, 95 % "
                f"interval [{row.diff_lo:+.3f}, {row.diff_hi:+.3f}], {_p(row.p_value)})."
            )
    robustness_path = results / "robustness.csv"
    unit = "/255" if _attack_mode(results) == "ubsafe" else " (normalised input space)"
    if robustness_path.is_file():
        rob = pd.read_csv(robustness_path)
        rob = rob[(rob["source"] == "all") & (rob["n"] > 0)]
        for kind, part in (
            ("corruption", rob[rob["family"] != "attack"]),
            ("attack", rob[rob["family"] == "attack"]),
        ):
            if part.empty:
                continue
            row = part.sort_values(
                ["robust_accuracy", "classifier", "perturbation", "severity"], kind="stable"
            ).iloc[0]
            level = (
                f"severity {row.severity:g}"
                if kind == "corruption"
                else f"eps {row.severity:g}{unit}"
            )
            lines.append(
                f"Weakest {kind}: {row.perturbation} at {level} keeps "
                f"{row.robust_accuracy:.1%} of {row.classifier}'s correct decisions "
                f"(Robust Accuracy, 95 % interval [{row.ra_lo:.1%}, {row.ra_hi:.1%}], "
                f"n = {int(row.n)})."
            )
    return lines[:3]


def _attack_mode(results: Path) -> str:
    import json

    try:
        summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "ubsafe"
    return str(summary.get("attack_mode", "ubsafe"))


def _p(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "p n/a"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"
