"""Targeted attacks on a run's VLM judges, in the compare stage's row format.

The paper's protocol: for a judge and a source, the candidates are
the images it judged correctly under P0 in the score stage (`label_p0`, kept beside each score
shard); up to `attack.max_per_source` of them are drawn per attack seed as UnsafeBench draws them
(`paper_draw` over the candidates sorted by sample id). Each is pushed towards the opposite answer —
"unsafe" for a safe image, "safe" for an unsafe one — by targeted PGD in [0, 1] pixel space
(`ubsafe.attacks.judge`) with eps = attack.eps / 255 and `attack.steps` steps; FGSM is one step of
size eps from the clean image. An attack succeeds when the converter labels the judge's P0 answer
about the perturbed image as the target.

`attack_rows(run, name, shard)` gives the shard's rows with the compare stage's columns (family
"attack", severity = eps in 1/255, pred_clean = the true label, pred = the target when the attack
succeeded and the true label otherwise, cosine NaN), ready to be appended to the compare shard;
`attack_shard` gives the full results (responses, losses, L∞ norms). The compare stage runs them
for every judge whose registry entry lists attacks (`[judge] attacks`); the attack stage works on
embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from ubsafe.attacks.judge import AttackResult, PGDSettings
    from ubsafe.rundir import Run

#: The attacks on a judge's answer (targeted, on the language model's loss); an entry's
#: `[judge] attacks` names those its judge supports.
ATTACKS: tuple[str, ...] = ("fgsm", "pgd")


@dataclass(frozen=True)
class JudgeAttack:
    """One attack setting: which attack, its budget in 1/255 units, the draw's seed."""

    attack: str
    budget: float
    seed: int

    def settings(self, steps: int) -> PGDSettings:
        from ubsafe.attacks.judge import PGDSettings

        eps = self.budget / 255
        if self.attack == "fgsm":
            return PGDSettings(eps=eps, steps=1, alpha=eps, random_start=False, seed=self.seed)
        return PGDSettings(eps=eps, steps=steps, check_every=steps, seed=self.seed)


def attacks(run: Run, supported: tuple[str, ...] = ATTACKS) -> list[JudgeAttack]:
    """The run's attack settings that apply to a judge supporting `supported` (ubsafe's budgets)."""
    c = run.config
    return [
        JudgeAttack(attack, float(budget), seed)
        for attack in c.attacks
        if attack in ATTACKS and attack in supported
        for budget in c.attack.eps
        for seed in c.attack.seeds
    ]


def candidates(run: Run, name: str) -> pd.DataFrame:
    """Images the judge got right under P0 (sample_id, source_kind, label), sorted by sample id."""
    from ubsafe.vlm import responses

    answers = responses.read(run)
    mine = answers[answers["classifier"] == name]
    plan = run.plan.set_index("sample_id")
    facts = plan.loc[mine["sample_id"], ["source_kind", "label"]].reset_index()
    right = facts[mine["label_p0"].to_numpy() == facts["label"].to_numpy()]
    return right.sort_values("sample_id", kind="stable").reset_index(drop=True)


def selection(run: Run, name: str) -> pd.DataFrame:
    """(seed, sample_id) of every image to attack, drawn per source as the paper draws."""
    import pandas as pd

    from ubsafe.attacks import paper_draw

    pool = candidates(run, name)
    k = run.config.attack.max_per_source
    rows = []
    for _, group in pool.groupby("source_kind", sort=True):
        ids = group["sample_id"].tolist()
        for seed in run.config.attack.seeds:
            drawn = paper_draw(len(ids), seed=seed, k=k) if k else range(len(ids))
            rows += [(seed, ids[i]) for i in drawn]
    return pd.DataFrame(rows, columns=["seed", "sample_id"])


def attack_shard(
    run: Run, name: str, shard: int, supported: tuple[str, ...] | None = None
) -> list[tuple[JudgeAttack, AttackResult]]:
    """Every attack setting the judge supports (its entry's `[judge] attacks` unless `supported`
    says) on the shard's selected images (sorted by sample id); none for a judge without attacks."""
    from ubsafe.attacks.judge import targeted_pgd
    from ubsafe.classifiers import get_entry
    from ubsafe.stages import common

    spec = get_entry(name).judge
    if supported is None:
        supported = spec.attacks if spec is not None else ()
    settings = attacks(run, supported)
    if not settings:
        return []
    rows = run.shard_plan(shard)
    chosen = selection(run, name)
    judge = common.run_classifier(run, name).judge
    out = []
    for setting in settings:
        ids = set(chosen.loc[chosen["seed"] == setting.seed, "sample_id"])
        wanted = rows[rows["sample_id"].isin(ids)]
        if wanted.empty:
            continue
        decoded = common.decode_shard(run, wanted, lambda image: image)
        labels = wanted.set_index("sample_id").loc[decoded.sample_ids, "label"]
        result = targeted_pgd(
            judge,
            decoded.items,
            [int(v) for v in labels],
            decoded.sample_ids,
            settings=setting.settings(run.config.attack.steps),
            batch_size=run.config.vlm.batch_size,
        )
        out.append((setting, result))
    return out


def attack_rows(
    run: Run, name: str, shard: int, supported: tuple[str, ...] | None = None
) -> pd.DataFrame:
    """The shard's attack outcomes as compare-stage rows (see the module docstring)."""
    import pandas as pd

    from ubsafe.stages import compare

    frames = []
    for setting, result in attack_shard(run, name, shard, supported):
        truth = (1 - result.target).astype(np.int8)
        judged = np.where(result.success, result.target, truth).astype(np.int8)
        frames.append(
            compare.frame(
                sample_id=np.asarray(result.sample_ids, dtype=object),
                classifier=name,
                perturbation=setting.attack,
                family="attack",
                severity=setting.budget,
                seed=setting.seed,
                pred_clean=truth,
                pred=judged,
                cosine=np.full(len(result.sample_ids), np.nan, np.float32),
            )
        )
    if not frames:
        return compare.frame(**{column: [] for column in compare.COLUMNS})
    return pd.concat(frames, ignore_index=True)
