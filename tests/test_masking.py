"""Exact magnitude masks and BN folding (docs/methods.md#prunable-layers-and-masks)."""

from __future__ import annotations

import pytest
import torch

from ptsbench.errors import ConfigError
from ptsbench.models import zoo
from ptsbench.sparsity.layers import fold_batchnorm, prunable_modules
from ptsbench.sparsity.selection import magnitude_mask, num_pruned


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.7, 0.73, 0.999])
def test_mask_prunes_exactly_floor_rate_times_n(rate):
    w = torch.randn(37, 11, 3, 3)
    mask = magnitude_mask(w, rate)
    assert int((~mask).sum()) == int(rate * w.numel() + 1e-9) == num_pruned(rate, w.numel())


def test_mask_removes_the_smallest_magnitudes():
    w = torch.tensor([0.5, -0.1, 3.0, -2.0, 0.2])
    assert magnitude_mask(w, 0.6).tolist() == [False, False, True, True, False]


def test_ties_are_broken_deterministically_by_index():
    w = torch.ones(10)
    m1, m2 = magnitude_mask(w, 0.3), magnitude_mask(w.clone(), 0.3)
    assert torch.equal(m1, m2) and m1.tolist() == [False] * 3 + [True] * 7


def test_float_rounding_of_rate_times_n():
    assert num_pruned(0.7, 10) == 7 and num_pruned(0.6, 5) == 3


def test_bn_folding_keeps_outputs():
    torch.manual_seed(0)
    model = zoo.ZOO_ARCHS.get("cifar_resnet20")(10, 1, 28)
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(4, 1, 28, 28)
    before = model(x)
    pairs = fold_batchnorm(model)
    assert len(pairs) == 19 + 2  # 19 conv+bn on the main path, 2 downsample shortcuts
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(x), before, atol=1e-4, rtol=1e-4)


def test_unknown_exclude_glob_is_a_config_error():
    model = zoo.ZOO_ARCHS.get("cifar_resnet20")(10, 1, 28)
    with pytest.raises(ConfigError, match="prune.exclude: glob 'classifier' matches no prunable layer"):
        prunable_modules(model, ["classifier"])
    assert "fc" not in prunable_modules(model, ["fc"])
