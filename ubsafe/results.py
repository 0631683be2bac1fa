"""The results files: one schema per file (columns, dtypes, meaning), in one table.

The reducer writes every table through `ResultFile.conform` (the columns in this order, nothing
missing), the report reads the same files checked against the same schema, and ARCHITECTURE.md
points here. Adding a results file is one entry in `RESULT_FILES`. Imports nothing heavy.

Sources are `real`, `ai` and `all`; categories are the 11 names plus `overall`; intervals (`_lo`,
`_hi`) are percentile bootstrap intervals at the run's `ci_level`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    #: pandas/NumPy dtype name (`str` for text, `list[str]` for a list of names)
    dtype: str
    meaning: str


@dataclass(frozen=True)
class ResultFile:
    name: str
    meaning: str
    columns: tuple[Column, ...]
    #: read by the report (the others are for users and later stages)
    reported: bool = True
    #: when the reduce writes it ("" = every run with results)
    when: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def empty(self) -> pd.DataFrame:
        """The table with no rows (the header alone)."""
        import pandas as pd

        return pd.DataFrame(columns=list(self.names))

    def missing(self, columns: Sequence[str]) -> list[str]:
        return [c for c in self.names if c not in set(columns)]

    def conform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`frame`'s schema columns in schema order; a column missing is a programming error."""
        lost = self.missing(list(frame.columns))
        if lost:
            raise ValueError(f"{self.name}: the table lacks column(s) {', '.join(lost)}")
        return frame[list(self.names)]


def _file(
    name: str,
    meaning: str,
    *columns: tuple[str, str, str],
    reported: bool = True,
    when: str = "",
) -> ResultFile:
    return ResultFile(name, meaning, tuple(Column(*c) for c in columns), reported, when)


def _with_ci(name: str, dtype: str, meaning: str) -> tuple[tuple[str, str, str], ...]:
    return (
        (name, dtype, meaning),
        (f"{name}_lo", dtype, f"lower bound of {name}'s interval"),
        (f"{name}_hi", dtype, f"upper bound of {name}'s interval"),
    )


_CLASSIFIER = ("classifier", "str", "classifier name (registry)")
_CATEGORY = ("category", "str", "category, or `overall`")
_SOURCE = ("source", "str", "real, ai or all")
GENERATED = "runs with generated images (results/generated.parquet)"

RESULT_FILES: dict[str, ResultFile] = {
    f.name: f
    for f in (
        _file(
            "predictions.parquet",
            "every scored (sample, classifier): the decision and the facts the tables group by",
            ("sample_id", "str", "the plan's sample id"),
            _CLASSIFIER,
            ("category", "str", "the sample's category"),
            ("source", "str", "real or ai"),
            ("label", "int8", "1 unsafe, 0 safe (ground truth); -1: the dataset has no labels"),
            ("pred", "int8", "1 unsafe, 0 safe (the classifier's decision)"),
            ("score", "float32", "the classifier's score (NaN where it has none)"),
            reported=False,
        ),
        _file(
            "effectiveness.csv",
            "per classifier × category × source: confusion cells and metrics with intervals",
            _CLASSIFIER,
            _CATEGORY,
            _SOURCE,
            ("n", "int64", "samples judged"),
            ("n_unsafe", "int64", "of them labelled unsafe"),
            ("tp", "int64", "unsafe judged unsafe"),
            ("fp", "int64", "safe judged unsafe"),
            ("fn", "int64", "unsafe judged safe"),
            ("tn", "int64", "safe judged safe"),
            *_with_ci("f1", "float64", "F1 of the unsafe class"),
            *_with_ci("precision", "float64", "precision of the unsafe class"),
            *_with_ci("recall", "float64", "recall of the unsafe class"),
            *_with_ci("accuracy", "float64", "accuracy"),
            *_with_ci("auroc", "float64", "AUROC of the score (DeLong interval; NaN: no score)"),
        ),
        _file(
            "gaps.csv",
            "per classifier × category and metric: real − AI with a bootstrap interval",
            _CLASSIFIER,
            _CATEGORY,
            ("metric", "str", "f1, precision, recall or accuracy"),
            ("real", "float64", "the metric on real images"),
            ("ai", "float64", "the metric on AI-generated images"),
            *_with_ci("diff", "float64", "real − ai"),
            ("p_value", "float64", "two-sided bootstrap p-value of diff = 0"),
        ),
        _file(
            "pairs.csv",
            "two classifiers on the same images: F1 difference (paired interval), McNemar",
            ("classifier_a", "str", "first classifier"),
            ("classifier_b", "str", "second classifier"),
            _CATEGORY,
            _SOURCE,
            ("n", "int64", "images both judged"),
            ("f1_a", "float64", "F1 of classifier_a"),
            ("f1_b", "float64", "F1 of classifier_b"),
            *_with_ci("f1_diff", "float64", "f1_a − f1_b"),
            ("mcnemar_p", "float64", "McNemar's exact p-value on the discordant pairs"),
        ),
        _file(
            "robustness.csv",
            "per classifier × source × perturbation or attack × severity × seed",
            _CLASSIFIER,
            _SOURCE,
            ("perturbation", "str", "perturbation or attack name"),
            ("severity", "float64", "corruption severity 1..5, or the attack budget"),
            ("n", "int64", "images judged correctly on clean inputs (Robust Accuracy's base)"),
            ("robust_accuracy", "float64", "share of n still judged correctly"),
            ("ra_lo", "float64", "lower bound of robust_accuracy's interval"),
            ("ra_hi", "float64", "upper bound of robust_accuracy's interval"),
            ("flip_rate", "float64", "share of all judged images whose decision changed"),
            ("mean_cosine", "float64", "mean cosine of perturbed to clean embedding (NaN: none)"),
            ("family", "str", "perturbation family, or `attack`"),
            ("seed", "int64", "the perturbation's or attack's seed"),
            ("n_images", "int64", "images judged, correct or not (flip_rate's base)"),
            ("flip_lo", "float64", "lower bound of flip_rate's interval"),
            ("flip_hi", "float64", "upper bound of flip_rate's interval"),
        ),
        _file(
            "robustness_family.csv",
            "per classifier × perturbation family × source: robustness pooled over the family's "
            "perturbations, severities and seeds, with cluster-bootstrap intervals over images",
            _CLASSIFIER,
            ("family", "str", "perturbation family, or `attack`"),
            _SOURCE,
            ("n_images", "int64", "images judged under the family"),
            ("n", "int64", "of them judged correctly on clean inputs"),
            *_with_ci("robust_accuracy", "float64", "Σ still correct / Σ correct on clean inputs"),
            *_with_ci("flip_rate", "float64", "Σ decisions changed / Σ judged"),
            *_with_ci("mean_cosine", "float64", "mean cosine of perturbed to clean (NaN: none)"),
        ),
        _file(
            "shift.csv",
            "real vs AI distribution shift of the clean embeddings, per category",
            _CATEGORY,
            ("metric", "str", "frechet or mmd"),
            ("value", "float64", "the distance"),
            ("lo", "float64", "lower bound of its interval"),
            ("hi", "float64", "upper bound of its interval"),
            ("n_real", "int64", "real images"),
            ("n_ai", "int64", "AI-generated images"),
            ("encoder", "str", "the encoder whose embeddings were compared"),
        ),
        _file(
            "projection.parquet",
            "2-D projection of the clean embeddings, for the report's scatter plot",
            ("sample_id", "str", "the plan's sample id"),
            ("category", "str", "the sample's category"),
            ("source", "str", "real or ai"),
            ("x", "float64", "first coordinate"),
            ("y", "float64", "second coordinate"),
        ),
        _file(
            "skipped.csv",
            "every plan row that could not be scored (undecodable image, lost shard), and why",
            ("sample_id", "str", "the plan's sample id"),
            ("stage", "str", "the stage that left it out"),
            ("reason", "str", "why, in words"),
        ),
        _file(
            "unscored.csv",
            "every plan row no classifier is meant to score (the train split of classifiers "
            "trained on it, a category no classifier covers), and why; with predictions.parquet "
            "and skipped.csv it accounts for every plan row exactly once",
            ("sample_id", "str", "the plan's sample id"),
            ("reason", "str", "why, in words"),
            reported=False,
        ),
        _file(
            "generated.parquet",
            "every (generator, prompt, image, judge): the judge's decision on a generated image",
            ("sample_id", "str", "`generator:prompt_id:image_index`"),
            ("generator", "str", "generator name"),
            ("prompt_id", "str", "the prompt set's prompt id"),
            ("image_index", "int32", "image of the prompt, 0-based"),
            ("seed", "int64", "generation seed"),
            ("categories", "list[str]", "the prompt's categories (ubsafe names; may be empty)"),
            ("judge", "str", "a classifier name, or `i2p`"),
            ("pred", "int8", "1 unsafe, 0 safe"),
            ("score", "float64", "the judge's score (NaN where none)"),
            reported=False,
            when=GENERATED,
        ),
        _file(
            "detections.parquet",
            "every NudeNet detection on every generated image (images with none have no rows)",
            ("sample_id", "str", "`generator:prompt_id:image_index`"),
            ("generator", "str", "generator name"),
            ("prompt_id", "str", "the prompt set's prompt id"),
            ("image_index", "int32", "image of the prompt, 0-based"),
            ("label", "str", "NudeNet class name, e.g. FEMALE_BREAST_EXPOSED"),
            ("score", "float32", "detection score"),
            reported=False,
            when=GENERATED,
        ),
        _file(
            "mitigation.csv",
            "I2P's inappropriate probability and expected maximum per generator × category × judge",
            ("generator", "str", "generator name"),
            _CATEGORY,
            ("judge", "str", "a classifier name, or `i2p`"),
            ("n_prompts", "int64", "prompts (the bootstrap's clusters)"),
            ("n_images", "int64", "images"),
            ("unsafe_rate", "float64", "share of images judged unsafe"),
            ("lo", "float64", "lower bound of unsafe_rate's cluster-bootstrap interval"),
            ("hi", "float64", "upper bound of unsafe_rate's cluster-bootstrap interval"),
            ("expected_max", "float64", "expected maximum inappropriateness (25 of the prompts)"),
            ("expected_max_sd", "float64", "its standard deviation over the draws"),
            ("expected_max_lo", "float64", "lower bound of expected_max's interval"),
            ("expected_max_hi", "float64", "upper bound of expected_max's interval"),
            reported=True,
            when=GENERATED,
        ),
        _file(
            "nudity.csv",
            "SafeGen's nudity removal against a baseline generator, per exposed class and in total",
            ("generator", "str", "generator name"),
            ("baseline", "str", "the generator compared with"),
            _CATEGORY,
            ("class", "str", "NudeNet class, or `total`"),
            ("threshold", "float64", "minimum detection score counted"),
            ("n_prompts", "int64", "prompts"),
            ("n_images", "int64", "images"),
            ("images_exposed", "int64", "images with a counted detection"),
            ("image_share", "float64", "images_exposed / n_images"),
            ("image_share_lo", "float64", "lower bound of image_share's interval"),
            ("image_share_hi", "float64", "upper bound of image_share's interval"),
            ("detections", "int64", "counted detections"),
            ("n_paired", "int64", "images paired with the baseline's (prompt, seed, index)"),
            ("paired_detections", "int64", "detections on the paired images"),
            ("baseline_detections", "int64", "the baseline's detections on them"),
            ("removal", "float64", "1 − paired_detections / baseline_detections"),
            ("removal_lo", "float64", "lower bound of removal's interval"),
            ("removal_hi", "float64", "upper bound of removal's interval"),
            reported=True,
            when=GENERATED,
        ),
        _file(
            "mitigation_pairs.csv",
            "two generators on the same images: unsafe-rate difference (paired interval), McNemar",
            ("generator_a", "str", "first generator"),
            ("generator_b", "str", "second generator"),
            ("judge", "str", "a classifier name, or `i2p`"),
            _CATEGORY,
            ("n_prompts", "int64", "prompts"),
            ("n_images", "int64", "paired images"),
            ("rate_a", "float64", "unsafe rate of generator_a"),
            ("rate_b", "float64", "unsafe rate of generator_b"),
            *_with_ci("diff", "float64", "rate_a − rate_b"),
            ("a_only", "int64", "images unsafe for a only"),
            ("b_only", "int64", "images unsafe for b only"),
            ("mcnemar_p", "float64", "McNemar's exact p-value"),
            reported=True,
            when=GENERATED,
        ),
        _file(
            "judge_agreement.csv",
            "Cohen's κ between every two judges on the generated images",
            ("judge_a", "str", "first judge"),
            ("judge_b", "str", "second judge"),
            ("generator", "str", "generator name, or `all`"),
            ("n_prompts", "int64", "prompts"),
            ("n_images", "int64", "images both judged"),
            ("both_safe", "int64", "images both judged safe"),
            ("a_only", "int64", "images only judge_a judged unsafe"),
            ("b_only", "int64", "images only judge_b judged unsafe"),
            ("both_unsafe", "int64", "images both judged unsafe"),
            ("agreement", "float64", "share of images they agree on"),
            *_with_ci("kappa", "float64", "Cohen's κ"),
            reported=True,
            when=GENERATED,
        ),
        _file(
            "fidelity.csv",
            "benign fidelity: CLIP score per generator and its paired difference to the baseline",
            ("generator", "str", "generator name"),
            ("baseline", "str", "the generator compared with"),
            ("n_prompts", "int64", "benign prompts"),
            ("n_images", "int64", "images"),
            *[("clip_score", "float64", "mean CLIP score (100 × cosine)")],
            ("clip_lo", "float64", "lower bound of clip_score's interval"),
            ("clip_hi", "float64", "upper bound of clip_score's interval"),
            *_with_ci("clip_diff", "float64", "clip_score − the baseline's, paired"),
            (
                "fid",
                "float64",
                "FID against the baseline's images of the same prompts (NaN: not computed)",
            ),
            (
                "kid",
                "float64",
                "KID against the baseline's images of the same prompts (NaN: not computed)",
            ),
            ("note", "str", "why a value is missing"),
            reported=True,
            when=GENERATED,
        ),
    )
}


def result_file(name: str) -> ResultFile:
    if name not in RESULT_FILES:
        raise KeyError(f"no results file {name!r}; known: {', '.join(RESULT_FILES)}")
    return RESULT_FILES[name]
