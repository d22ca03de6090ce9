import numpy as np

from digitcmp.experiments import Claim
from digitcmp.stats import RowStats, evaluate_claim


def _rows(a, b):
    make = lambda name, errs: RowStats(
        "e",
        name,
        name,
        np.array(errs, float),
        list(range(len(errs))),  # noqa: E731
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
