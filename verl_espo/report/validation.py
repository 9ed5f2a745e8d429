"""Per-benchmark validation accuracy from veRL's metric names.

veRL's validation (``process_validation_metrics`` in ``verl/trainer/ppo/metric_utils.py``, named by
``_val_metrics_update`` in ``verl/trainer/ppo/v1/trainer_base.py``) logs, for every ``data_source`` and every
variable the reward returns (``acc``, ``score``, ...; ``reward`` for a plain float score)::

    val-core/<data_source>/<var>/mean@N        (N = responses per prompt: the papers' avg@N)
    val-core/<data_source>/<var>/best@N/mean   (bootstrap pass@N), maj@N/mean (majority vote, when `pred` exists)
    val-aux/<data_source>/<var>/std@N, best@n/std, worst@n/..., and every non-core variable

The core variable is ``acc`` when the reward returns it, else ``reward``. A benchmark's accuracy is therefore
``val-core/<data_source>/acc/mean@N`` (for ``math_dapo``-style ±1 scores ``acc``, not ``score``, is the accuracy).
``data_source`` may itself contain slashes (``HuggingFaceH4/MATH-500``), so names are parsed from the right.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from verl_espo.report.runs import Run

__all__ = ["ValKey", "Benchmark", "benchmarks", "parse_val_key"]

_VAL_KEY = re.compile(
    r"^(?P<section>val-core|val-aux)/(?P<source>.+)/(?P<var>[^/]+)/"
    r"(?P<stat>(?:mean|std)@(?P<n1>\d+)|(?:best|worst|maj)@(?P<n2>\d+)/(?:mean|std))$"
)

#: core variables in order of preference (``acc`` is the accuracy; ``reward`` when the score is a plain float)
CORE_VARS = ("acc", "reward", "score")


@dataclass(frozen=True)
class ValKey:
    """A parsed validation metric name."""

    key: str
    section: str  # val-core | val-aux
    source: str  # the data_source (benchmark)
    var: str  # acc | reward | score | ...
    stat: str  # mean@N | std@N | best@N/mean | ...
    n: int  # N of the stat


def parse_val_key(key: str) -> ValKey | None:
    """``val-core/aime24/acc/mean@32`` -> ``ValKey(source="aime24", var="acc", stat="mean@32", n=32, ...)``."""
    m = _VAL_KEY.match(key)
    if m is None:
        return None
    n = int(m.group("n1") or m.group("n2"))
    return ValKey(key, m.group("section"), m.group("source"), m.group("var"), m.group("stat"), n)


@dataclass(frozen=True)
class Benchmark:
    """The accuracy metric of one benchmark: ``val-core/<source>/<var>/mean@<n>`` (avg@n)."""

    source: str
    var: str
    n: int

    @property
    def key(self) -> str:
        return f"val-core/{self.source}/{self.var}/mean@{self.n}"

    @property
    def scale(self) -> float:
        """Shown as a percentage when the variable is an accuracy (``acc``), as logged otherwise."""
        return 100.0 if self.var == "acc" else 1.0

    @property
    def axis_label(self) -> str:
        return f"accuracy, avg@{self.n} (%)" if self.var == "acc" else f"mean {self.var}, mean@{self.n}"

    @property
    def label(self) -> str:
        """Column header: the data source and the protocol, e.g. ``aime24 (avg@32)``."""
        var = "" if self.var == "acc" else f", {self.var}"
        return f"{self.source} (avg@{self.n}{var})"


def benchmarks(runs: Sequence[Run]) -> list[Benchmark]:
    """One accuracy metric per data source found in any run, sorted by source.

    Per source: the core variable first in :data:`CORE_VARS` order (else the first one alphabetically), then
    the largest N any run logged for it (runs that validated with a smaller N keep an empty cell).
    """
    found: dict[str, dict[str, set[int]]] = {}
    for run in runs:
        for key in run.keys():
            parsed = parse_val_key(key)
            if parsed is not None and parsed.section == "val-core" and parsed.stat.startswith("mean@"):
                found.setdefault(parsed.source, {}).setdefault(parsed.var, set()).add(parsed.n)
    result = []
    for source, by_var in sorted(found.items()):
        var = next((v for v in CORE_VARS if v in by_var), sorted(by_var)[0])
        result.append(Benchmark(source, var, max(by_var[var])))
    return result
