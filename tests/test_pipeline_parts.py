"""The pipeline's small parts: phase timing/attribution and the budget around excluded layers."""

from __future__ import annotations

import pytest

from ptsbench.errors import ConfigError
from ptsbench.sparsity.budget import rate_over_included
from ptsbench.timing import PhaseTimer


def test_phases_time_what_completes_and_name_the_one_that_raised():
    timing: dict[str, float] = {}
    phases = PhaseTimer(timing)
    with phases("build"):
        pass
    with pytest.raises(ValueError), phases("allocate"):
        raise ValueError("boom")
    assert phases.current == "allocate"
    assert list(timing) == ["build"] and timing["build"] >= 0.0


@pytest.mark.parametrize(
    "rate,total,included,expected",
    [
        (0.5, 100, 100, 0.5),  # nothing excluded: the rate itself
        (0.5, 100, 80, 0.625),  # 20 dense weights still count: 50 zeros among the 80 included
        (0.0, 100, 10, 0.0),
    ],
)
def test_rate_over_included_keeps_the_global_count(rate, total, included, expected):
    inner = rate_over_included(rate, total, included)
    assert inner == pytest.approx(expected)
    assert inner * included == pytest.approx(rate * total)


def test_a_rate_the_included_layers_cannot_carry_names_both_knobs():
    with pytest.raises(ConfigError, match=r"sparsity.rate=0.8 cannot be met while prune.exclude keeps 30 of 100"):
        rate_over_included(0.8, 100, 70)
