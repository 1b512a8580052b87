"""The evidence rules are calibrated: synthetic records with a known effect, at the demo's shapes (3 tasks,
2..7 models each, a seed-free row against a row with 2 calibration seeds, 2 rates), go through the real
loader, Table 2 and the finding check; the 95% intervals cover the truth and a null effect rarely gets a
verdict. docs/coverage.md holds the same measurement with more replicates (scripts/coverage_table.py)."""

from __future__ import annotations

import math

import pytest

from ptsbench.tables.evidence import JACKKNIFE
from ptsbench.tables.simulation import Scenario, simulate, truth

REPS = 150
# the procedure's own rate is 5% (a two-sided 95% interval); 150 replicates measure it to +-1.8% (one SE)
NULL_BOUND = 0.05 + 2 * math.sqrt(0.05 * 0.95 / REPS)


@pytest.fixture(scope="module")
def null():
    return simulate(list(range(2, 8)), [0.0], REPS, [JACKKNIFE], seed=0).set_index("n_models")


def test_intervals_cover_the_truth_from_five_models(null):
    for n in (5, 6, 7):
        for col in ("cover_cell", "cover_om", "cover_margin"):
            assert null.at[n, col] >= 0.90, (n, col, null.at[n, col])


def test_a_null_effect_rarely_gets_a_verdict_at_any_number_of_models(null):
    wrong = null.holds + null.fails
    assert wrong.at[2] == 0.0  # 2 models: never a verdict
    assert (wrong <= NULL_BOUND).all(), wrong.to_dict()


def test_a_real_effect_is_found_and_covered():
    res = simulate([7], [0.03], REPS, [JACKKNIFE], seed=1).iloc[0]
    assert res.holds >= 0.8 and res.fails == 0.0 and res.cover_margin >= 0.9
    assert truth(Scenario(7, 0.03))["margin"] == pytest.approx(2.86, abs=0.01)
