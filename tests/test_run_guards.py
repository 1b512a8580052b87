"""A run is reported ok only when it did what was asked: an N:M pattern's rate is accepted within rounding
(and derived when left out); the achieved global rate equals the target up to the documented per-layer
rounding, checked right after masking; every numeric knob is finite and in a sane range; batch sizes are
capped at the calibration set; running out of memory is a failed record naming the knob to lower."""

from __future__ import annotations

import pytest

from ptsbench.config.spec import resolve
from ptsbench.errors import ConfigError

TINY = ["dataset.num_test=100", "calib.num_samples=32", "eval.batch_size=100"]


@pytest.mark.parametrize("rate", [None, "0.666667", "0.6666666666666667"])
def test_a_1_of_3_pattern_takes_its_rate_within_rounding_or_derives_it(make_cfg, rate):
    given = [] if rate is None else [f"sparsity.rate={rate}"]
    spec = resolve(make_cfg("sparsity=nm", "sparsity.n=1", "sparsity.m=3", *given))
    assert spec.rate == pytest.approx(2 / 3, abs=1e-6)
    assert spec.identity.config["sparsity"]["rate"] == pytest.approx(2 / 3, abs=1e-6)
    assert spec.identity.name.split("-")[-2] == "s0.666667"


def test_a_derived_nm_rate_names_the_same_run_as_the_printed_one(make_cfg):
    derived = resolve(make_cfg("sparsity=nm", "sparsity.n=1", "sparsity.m=3")).identity.digest
    printed = resolve(make_cfg("sparsity=nm", "sparsity.n=1", "sparsity.m=3", "sparsity.rate=0.666667")).identity.digest
    default_2_4 = resolve(make_cfg("sparsity=nm")).identity.digest
    assert derived == printed and default_2_4 == resolve(make_cfg("sparsity=nm", "sparsity.rate=0.5")).identity.digest


@pytest.mark.parametrize("rate", ["0.5", "0.67", "0.7"])
def test_a_1_of_3_pattern_refuses_another_rate_naming_its_own(make_cfg, rate):
    with pytest.raises(ConfigError, match=rf"sparsity.rate={rate} .*pass sparsity.rate=0.666667"):
        resolve(make_cfg("sparsity=nm", "sparsity.n=1", "sparsity.m=3", f"sparsity.rate={rate}"))


def test_an_nm_pattern_with_n_not_below_m_is_refused_by_n_and_m(make_cfg):
    with pytest.raises(ConfigError, match=r"sparsity.n=3, sparsity.m=3: need integers 0 < n < m"):
        resolve(make_cfg("sparsity=nm", "sparsity.n=3", "sparsity.m=3"))
