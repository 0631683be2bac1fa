"""Dataset problems found before any job: each names where, the value, and the fix."""

from __future__ import annotations

from collections import Counter
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
