"""Statistics of the report: each row's mean, spread and interval over seeds, and the paired
tests behind each claim. Everything is computed from stored runs."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .experiments import Claim, Experiment
from .plan import seeds_for
from .store import Store


@dataclass
class RowStats:
    """Our statistics of one table row."""

    experiment: str
    name: str
    config_hash: str
    errors: np.ndarray  # [n] test error in %, ordered by seed
    seeds: list[int]
    seconds: np.ndarray
    run_ids: list[int]
    published: object

    @property
    def n(self) -> int:
        """The number of seeds."""
        return len(self.errors)

    @property
    def mean(self) -> float:
        """The mean error over seeds (nan without any)."""
        return float(self.errors.mean()) if self.n else math.nan

    @property
    def sd(self) -> float:
        """The sample standard deviation over seeds (nan under 2)."""
        return float(self.errors.std(ddof=1)) if self.n > 1 else math.nan

    @property
    def ci95(self) -> tuple[float, float]:
        """Student-t interval of the mean over seeds, clipped to [0, 100]: an error rate (in %) can be
        neither negative nor above 100, though with few seeds the interval's arithmetic says so."""
        if self.n < 2:
            return (math.nan, math.nan)
        if self.sd == 0:
            return (self.mean, self.mean)
        low, high = stats.t.interval(0.95, self.n - 1, loc=self.mean, scale=self.sd / math.sqrt(self.n))
        return max(float(low), 0.0), min(float(high), 100.0)


def collect(store: Store, experiment: Experiment, seeds: int | None, epochs: int | None) -> list[RowStats]:
    """Our stats for every row of an experiment, from the store."""
    protocol = {} if epochs is None else {"epochs": epochs}
    out = []
    for row in experiment.rows:
        config = experiment.config(row, **protocol)
        runs = store.runs(config.config_hash(), seeds_for(experiment, seeds))
        out.append(
            RowStats(
                experiment.name,
                row.name,
                config.config_hash(),
                np.array([100 * r["test_error"] for r in runs]),
                [r["seed"] for r in runs],
                np.array([r["train_seconds"] for r in runs]),
                [r["id"] for r in runs],
                row.published,
            )
        )
    return out


@dataclass
class ClaimResult:
    claim: Claim
    n: int
    mean_diff: float  # better - worse, in % points (negative supports the claim)
    p_wilcoxon: float
    p_ttest: float
    verdict: str
    p_reversed: float = math.nan  # Wilcoxon, the other way round (worse < better)
    family: str = ""  # the family its p-values are adjusted within (adjust_family)
    p_holm: float = math.nan  # p_wilcoxon, Holm-adjusted within the family
    verdict_unadjusted: str = ""  # the verdict before the adjustment


@dataclass(frozen=True)
class PairedTest:
    """Paired tests of a against b (the same seeds, or runs, in the same order), both ways."""

    n: int
    mean_diff: float  # mean of a - b
    p_wilcoxon_less: float  # Wilcoxon signed-rank, alternative a < b
    p_wilcoxon_greater: float
    p_t_less: float  # paired t-test, alternative a < b
    p_t_greater: float

    @property
    def p_t_two_sided(self) -> float:
        """The paired t-test's two-sided p-value."""
        return min(1.0, 2 * min(self.p_t_less, self.p_t_greater))


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """The one paired test of the package (claims in the report, choices in the tuning report): a
    and b at least 2 values each. Equal values give p = 1 both ways; differences that are all the
    same (no spread) give the t-test's limit, 0 or 1."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a - b
    if np.all(diff == 0):
        return PairedTest(len(a), 0.0, 1.0, 1.0, 1.0, 1.0)
    p_less = float(stats.wilcoxon(a, b, alternative="less").pvalue)
    p_greater = float(stats.wilcoxon(a, b, alternative="greater").pvalue)
    if diff.std() > 0:
        with warnings.catch_warnings():
            # Nearly equal differences (2-seed smoke runs) make SciPy warn about precision; the t test
            # is the secondary test here and the verdicts rest on the Wilcoxon test.
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
            t_less = float(stats.ttest_rel(a, b, alternative="less").pvalue)
            t_greater = float(stats.ttest_rel(a, b, alternative="greater").pvalue)
    else:
        t_less, t_greater = (0.0, 1.0) if diff.mean() < 0 else (1.0, 0.0)
    return PairedTest(len(a), float(diff.mean()), p_less, p_greater, t_less, t_greater)


def evaluate_claim(claim: Claim, rows: dict[str, RowStats]) -> ClaimResult:
    """Paired one-sided tests across seeds that `better` has the lower test error."""
    better, worse = rows.get(claim.better), rows.get(claim.worse)
    if better is None or worse is None:
        return ClaimResult(claim, 0, math.nan, math.nan, math.nan, "not run")
    common = sorted(set(better.seeds) & set(worse.seeds))
    a = np.array([better.errors[better.seeds.index(s)] for s in common])
    b = np.array([worse.errors[worse.seeds.index(s)] for s in common])
    if len(common) < 2:
        mean = float((a - b).mean()) if len(common) else math.nan
        return ClaimResult(claim, len(common), mean, math.nan, math.nan, "too few seeds")
    test = paired_test(a, b)
    verdict = _verdict(test.p_wilcoxon_less, test.p_wilcoxon_greater)
    return ClaimResult(
        claim, test.n, test.mean_diff, test.p_wilcoxon_less, test.p_t_less, verdict, p_reversed=test.p_wilcoxon_greater
    )


def _verdict(p_holds: float, p_reversed: float, level: float = 0.05) -> str:
    if p_holds < level:
        return "holds"
    if p_reversed < level:
        return "does not hold (reversed)"
    return "not significant"


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family's p-values (NaN ones are left out of the family and
    stay NaN): the i-th smallest of m is multiplied by m - i + 1, then made non-decreasing, capped
    at 1. Controls the chance of any false verdict in the family at the level, however the tests
    depend on each other."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, running, out = len(order), 0.0, [math.nan] * len(pvalues)
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def adjust_family(results: list[ClaimResult], family: str) -> list[ClaimResult]:
    """The claims of one family with Holm-adjusted p-values and verdicts on them. Both directions
    of every claim are tested, so the family holds 2 x (claims) hypotheses."""
    from dataclasses import replace

    tested = [r for r in results if not math.isnan(r.p_wilcoxon)]
    adjusted = holm([r.p_wilcoxon for r in tested] + [r.p_reversed for r in tested])
    holds, reversed_ = adjusted[: len(tested)], adjusted[len(tested) :]
    by_id = {id(r): (h, v) for r, h, v in zip(tested, holds, reversed_)}
    out = []
    for r in results:
        if id(r) not in by_id:
            out.append(replace(r, family=family, verdict_unadjusted=r.verdict))
            continue
        h, v = by_id[id(r)]
        out.append(replace(r, family=family, p_holm=h, verdict=_verdict(h, v), verdict_unadjusted=r.verdict))
    return out
