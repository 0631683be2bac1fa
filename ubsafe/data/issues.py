"""Dataset problems found before any job: each names where, the value, and the fix."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: How many issues of one kind are listed before the rest are summarised by count.
LIST_PER_KIND = 5


@dataclass(frozen=True)
class Issue:
    """One problem in the input: `where` is file[:row]; `kind` is shared by similar issues."""

    kind: str
    where: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message} (fix: {self.fix})"


def missing_columns(
    where: str, required: Sequence[str], present: Iterable[object], fix: str
) -> Issue | None:
    """The issue for columns in `required` that are not `present`, or None when all are."""
    names = [str(c) for c in present]
    missing = [c for c in required if c not in names]
    if not missing:
        return None
    return Issue(
        "missing-column",
        where,
        f"missing column(s) {', '.join(missing)} (has: {', '.join(names)})",
        fix,
    )


class DatasetError(Exception):
    """The dataset cannot be used; nothing was planned. `issues` lists every problem found."""

    def __init__(self, dataset: str, issues: list[Issue]):
        self.dataset = dataset
        self.issues = issues
        super().__init__(self.describe())

    def describe(self) -> str:
        counts = Counter(issue.kind for issue in self.issues)
        lines = [f"dataset {self.dataset} has {len(self.issues)} problem(s); nothing was planned:"]
        shown: Counter[str] = Counter()
        for issue in self.issues:
            shown[issue.kind] += 1
            if shown[issue.kind] <= LIST_PER_KIND:
                lines.append(f"  {issue}")
        for kind, count in counts.items():
            if count > LIST_PER_KIND:
                lines.append(f"  ... and {count - LIST_PER_KIND} more '{kind}' problems")
        return "\n".join(lines)
