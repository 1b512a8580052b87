"""OWL and AlphaPruning: outlier ratios and rates on hand-built layers, the Hill exponent on known
spectra, refused rates, and the exact global count of every allocator on every shipped zoo classifier."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ptsbench.errors import ConfigError
from ptsbench.models import zoo, zoo_checkpoint_path
from ptsbench.models.checkpoints import read_state_dict
from ptsbench.sparsity.allocators import AllocContext, build_allocator
from ptsbench.sparsity.allocators.alphapruning import alpha_rates, esd, hill_alpha
from ptsbench.sparsity.allocators.owl import outlier_ratio, owl_rates
from ptsbench.sparsity.layers import LayerInfo, fold_batchnorm, layer_infos, prunable_modules
from ptsbench.sparsity.selection import apply_masks, magnitude_masks, measure_sparsity, num_pruned


def test_outlier_ratio_counts_scores_above_m_times_the_mean():
    scores = torch.ones(100)
    scores[:4] = 50.0  # mean 2.96, threshold 14.8: exactly the 4 planted entries
    assert outlier_ratio(scores, 5.0) == pytest.approx(0.04)
    assert outlier_ratio(torch.ones(100), 5.0) == 0.0
    assert outlier_ratio(scores, 20.0) == 0.0  # threshold 59.2 is above every entry


def test_owl_rates_hand_computed_with_the_shift_to_the_global_rate():
    # mapped onto [0.4, 0.6]: most outliers (A) 0.4, none (B) 0.6, C halfway 0.5. Weighted mean
    # (40 + 180 + 100) / 600 = 0.5333, so every layer moves down by 0.0333.
    rates = owl_rates({"A": 0.04, "B": 0.0, "C": 0.02}, {"A": 100, "B": 300, "C": 200}, 0.5, 0.1)
    assert rates == pytest.approx({"A": 0.4 - 1 / 30, "B": 0.6 - 1 / 30, "C": 0.5 - 1 / 30})
    assert sum(r * n for r, n in zip(rates.values(), (100, 300, 200))) == pytest.approx(300)


class _TwoBranches(nn.Module):
    """Two 8 -> 4 Linears on separate halves of the input, so each layer's inputs are set by hand."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 4, bias=False), nn.Linear(8, 4, bias=False)
        for m in (self.a, self.b):
            nn.init.ones_(m.weight)

    def forward(self, x):
        return self.a(x[:, :8]) + self.b(x[:, 8:])


def test_owl_prunes_the_layer_with_planted_outlier_features_less():
    model = _TwoBranches()
    x = torch.ones(10, 16)
    x[:, 0] = 50.0  # a's input feature 0: its 4 weights score 50x the rest -> D_a = 4/32, D_b = 0
    ctx = AllocContext(model=model, modules={"a": model.a, "b": model.b}, calib_inputs=x)
    alloc = build_allocator("owl")
    rates = alloc.allocate(layer_infos(ctx.modules), {n: m.weight for n, m in ctx.modules.items()}, 0.5, ctx)
    assert ctx.report["outlier_ratio"] == pytest.approx({"a": 0.125, "b": 0.0})
    # a at 0.42, b at 0.58 of 32 weights: floors 13 + 18 = 31, the last of floor(0.5 * 64) = 32 goes to
    # the larger remainder (b's .56)
    assert [num_pruned(rates[n], 32) for n in ("a", "b")] == [13, 19]


def test_owl_refuses_a_rate_its_range_cannot_reach():
    with pytest.raises(ConfigError, match=r"allocator.lam=0.08 with sparsity.rate=0.95: .*outside \[0, 1\)"):
        build_allocator("owl").allocate([LayerInfo("a", (4, 4))], {"a": torch.ones(4, 4)}, 0.95, None)


def test_hill_estimator_recovers_a_planted_power_law_exponent():
    for alpha in (2.0, 3.0, 4.5):
        q = (torch.arange(4000, dtype=torch.float64) + 0.5) / 4000
        eigs = (1 - q).pow(-1 / (alpha - 1))  # Pareto quantiles, p(x) ~ x^-alpha for x >= 1
        assert hill_alpha(eigs) == pytest.approx(alpha, rel=0.03)
    assert hill_alpha(torch.ones(10)) == math.inf  # a flat tail has no power law
    assert math.isnan(hill_alpha(torch.tensor([0.0, 2.0])))


def _planted_spectrum(rows, cols, alpha, seed):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, rows, generator=g, dtype=torch.float64))
    q = (torch.arange(rows, dtype=torch.float64) + 0.5) / rows
    s = (1 - q).pow(-1 / (alpha - 1)).sqrt()  # squared singular values are Pareto(alpha)
    return u @ torch.diag(s) @ v.T


def test_a_planted_heavy_tail_has_a_lower_alpha_than_a_gaussian_matrix_and_is_pruned_less():
    gauss = torch.randn(128, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    heavy = _planted_spectrum(128, 256, 2.0, 1)
    a_gauss, a_heavy = hill_alpha(esd(gauss)), hill_alpha(esd(heavy))
    assert a_heavy == pytest.approx(2.0, rel=0.1)
    assert a_gauss > a_heavy + 0.5  # the Marchenko-Pastur bulk (aspect 1/2) ends at a hard edge: alpha ~2.8
    layers = [LayerInfo("gauss", (128, 256)), LayerInfo("heavy", (128, 256))]
    rates = build_allocator("alphapruning").allocate(layers, {"gauss": gauss, "heavy": heavy}, 0.6)
    # two layers, equal sizes: heavy at 0.6 * 0.8 (15728.64), gauss at 0.6 * 1.2 (23592.96) of 32768;
    # floor(0.6 * 65536) = 39321 is one more than the floors: it goes to the larger remainder
    assert [num_pruned(rates[n], 128 * 256) for n in ("heavy", "gauss")] == [15728, 23593]


def test_alpha_rates_hand_computed_and_refused_past_one():
    rates = alpha_rates({"A": 2.0, "B": 4.0, "C": 3.0}, {"A": 100, "B": 100, "C": 100}, 0.5, 0.2)
    assert rates == pytest.approx({"A": 0.4, "B": 0.6, "C": 0.5})
    # u = (0 + 1 + 0.5) / 3 = 0.5, so eps must stay below (1 - 0.9) / (1 + 0.9 - 1) = 0.111
    with pytest.raises(
        ConfigError, match=r"allocator.eps=0.2 with sparsity.rate=0.9: .*layer B at 1.080 .*below 0.111"
    ):
        alpha_rates({"A": 2.0, "B": 4.0, "C": 3.0}, {"A": 100, "B": 100, "C": 100}, 0.9, 0.2)


ZOO = [a for a in zoo.ZOO_ARCHS.names() if zoo_checkpoint_path(a, "mnist5k").exists()]
EXACT = ["l2norm", "owl", "alphapruning", "fcpts_erk", "fcpts_l2norm"]  # sum of counts = floor(S N)
FLOORED = ["uniform", "erk"]  # each layer floor(s_l N_l): short by less than a weight per layer


def _shipped(arch):
    torch.manual_seed(0)
    model = zoo.ZOO_ARCHS.get(arch)(10, 1, 28)
    model.load_state_dict(read_state_dict(zoo_checkpoint_path(arch, "mnist5k")))
    model.eval()
    fold_batchnorm(model)
    return model


def _allocator(name):
    if name == "alphapruning":  # the paper's eps = 0.2 would prune the zoo heads past 1 at 0.7 (next test)
        return build_allocator(name, eps=0.1)
    if name.startswith("fcpts_"):
        return build_allocator("fcpts", init=name.split("_")[1], iters=0)
    return build_allocator(name)


@pytest.mark.parametrize("arch", ZOO)
def test_every_allocator_meets_the_global_rate_on_every_shipped_zoo_classifier(arch):
    assert len(ZOO) >= 7
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for rate in (0.5, 0.7):
        for name in EXACT + FLOORED:
            model = _shipped(arch)
            modules = prunable_modules(model)
            ctx = AllocContext(model=model, modules=modules, calib_inputs=x, extras={"dense_model": model})
            weights = {n: m.weight.detach().clone() for n, m in modules.items()}
            rates = _allocator(name).allocate(layer_infos(modules), weights, rate, ctx)
            apply_masks(modules, magnitude_masks(modules, rates))
            got = measure_sparsity(modules)
            want = math.floor(rate * got["total"] + 1e-9)
            if name in EXACT:
                assert got["zeros"] == want, (arch, name, rate)
            else:
                assert 0 <= want - got["zeros"] < len(modules), (arch, name, rate)
            assert all(0.0 <= r < 1.0 for r in rates.values()), (arch, name, rate)


def test_alphapruning_at_the_papers_eps_refuses_the_vit_zoo_at_0_7_naming_the_eps_that_fits():
    model = _shipped("small_vit_d64")
    modules = prunable_modules(model)
    with pytest.raises(ConfigError, match=r"allocator.eps=0.2 .*layer head at 1.0.* below 0.19"):
        build_allocator("alphapruning").allocate(layer_infos(modules), {n: m.weight for n, m in modules.items()}, 0.7)
