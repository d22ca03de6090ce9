import numpy as np
import pytest

from digitcmp.study.experiments import Claim
from digitcmp.study.stats import RowStats, evaluate_claim


def _rows(a, b):
    make = lambda name, errs: RowStats(
        "e",
        name,
        name,
        np.array(errs, float),
        list(range(len(errs))),
        np.ones(len(errs)),
        [],
        None,
    )
    return {"e/a": make("a", a), "e/b": make("b", b)}


def test_claim_verdicts():
    claim = Claim("a beats b", "e/a", "e/b")
    better = [5, 6, 5.5, 4, 6.2, 5.1, 4.9, 5.3, 6.1, 5.0]
    worse = [x + 2 + 0.1 * i for i, x in enumerate(better)]
    assert evaluate_claim(claim, _rows(better, worse)).verdict == "holds"
    assert evaluate_claim(claim, _rows(worse, better)).verdict == "does not hold (reversed)"
    noisy = [x + (0.5 if i % 2 else -0.5) for i, x in enumerate(better)]
    assert evaluate_claim(claim, _rows(better, noisy)).verdict == "not significant"
    result = evaluate_claim(claim, _rows(better, worse))
    assert result.n == 10 and np.isclose(result.mean_diff, -2.45) and result.p_wilcoxon < 0.01


def test_row_statistics():
    row = RowStats("e", "a", "h", np.array([1.0, 2.0, 3.0, 4.0]), [0, 1, 2, 3], np.ones(4), [], None)
    assert row.n == 4 and row.mean == 2.5 and np.isclose(row.sd, np.std([1, 2, 3, 4], ddof=1))
    low, high = row.ci95
    assert low < 2.5 < high and np.isclose(high - 2.5, 2.5 - low)
    assert np.isclose(high - 2.5, 3.182446 * row.sd / 2, rtol=1e-5)  # t(0.975, 3) * sd / sqrt(n)


def test_nearly_equal_differences_give_a_verdict_without_warnings():
    import warnings

    claim = Claim("a beats b", "e/a", "e/b")
    a, b = [0.3, 0.6], [0.4, 0.7]  # both differences -0.1, equal up to rounding (a 2-seed smoke run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate_claim(claim, _rows(a, b))
    assert result.n == 2 and np.isclose(result.mean_diff, -0.1)


def test_holm_adjusts_a_family_step_down():
    import math

    from digitcmp.study.stats import holm

    # By hand: sorted 0.01, 0.02, 0.03, 0.5 of m = 4 -> 0.04, 0.06, 0.06 (made non-decreasing), 0.5.
    assert np.allclose(holm([0.03, 0.5, 0.01, 0.02]), [0.06, 0.5, 0.04, 0.06])
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1
    got = holm([0.01, math.nan, 0.04])  # a claim without a test is not in the family
    assert math.isnan(got[1]) and np.allclose([got[0], got[2]], [0.02, 0.04])
    assert holm([]) == [] and holm([0.2]) == [0.2]
    rng = np.random.default_rng(0)
    for _ in range(50):  # never below the raw value, order kept
        p = rng.uniform(0, 1, rng.integers(1, 12)).tolist()
        adj = holm(p)
        assert all(a >= q for a, q in zip(adj, p))
        in_order = [adj[i] for i in np.argsort(p)]
        assert in_order == sorted(in_order)  # a smaller p never gets a larger adjusted value


def test_a_family_verdict_rests_on_the_adjusted_p():
    from digitcmp.study.stats import adjust_family

    better = [5, 6, 5.5, 4, 6.2, 5.1, 4.9, 5.3, 6.1, 5.0]
    clear = [x + 2 + 0.1 * i for i, x in enumerate(better)]
    # A difference the raw test calls significant (p about 0.02) but not once 6 hypotheses share the 5 %.
    marginal = [x + d for x, d in zip(better, [0.3, 0.2, -0.1, 0.4, 0.25, 0.35, -0.3, 0.3, 0.2, -0.15])]
    rows = {**_rows(better, clear), "e/c": _rows(marginal, marginal)["e/a"]}
    claims = [Claim("a beats b", "e/a", "e/b"), Claim("a beats c", "e/a", "e/c"), Claim("c beats b", "e/c", "e/b")]
    raw = [evaluate_claim(c, rows) for c in claims]
    assert raw[1].verdict == "holds" and 0.0083 < raw[1].p_wilcoxon < 0.05  # (0.038)
    adjusted = adjust_family(raw, "Table X")
    assert [r.family for r in adjusted] == ["Table X"] * 3
    assert adjusted[0].verdict == "holds" and adjusted[0].p_holm >= adjusted[0].p_wilcoxon
    assert adjusted[1].verdict == "not significant" and adjusted[1].verdict_unadjusted == "holds"
    assert all(r.p_holm >= r.p_wilcoxon for r in adjusted)


def test_one_paired_test_both_ways():
    from scipy import stats as sps

    from digitcmp.study.stats import paired_test

    test = paired_test([1.0, 2.0, 3.0], [2.0, 3.0, 5.0])  # differences -1, -1, -2: all below zero
    assert test.n == 3 and test.mean_diff == pytest.approx(-4 / 3)
    assert test.p_wilcoxon_less == pytest.approx(1 / 8)  # exact: 1 of the 2^3 sign patterns is as extreme
    assert test.p_wilcoxon_greater == pytest.approx(1.0)
    # t = mean / (sd / sqrt(n)) = (-4/3) / (0.57735 / 1.73205) = -4 on 2 degrees of freedom
    assert test.p_t_less == pytest.approx(sps.t.cdf(-4.0, 2))
    assert test.p_t_two_sided == pytest.approx(2 * sps.t.cdf(-4.0, 2))
    same = paired_test([1.0, 2.0], [1.0, 2.0])
    assert (same.p_wilcoxon_less, same.p_t_two_sided, same.mean_diff) == (1.0, 1.0, 0.0)
