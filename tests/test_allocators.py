"""Allocators (docs/methods.md#allocators): hand-computed cases and the global-rate contract on real models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ptsbench.models import zoo
from ptsbench.sparsity.allocators import ALLOCATORS, build_allocator
from ptsbench.sparsity.allocators.erk import erk_densities
from ptsbench.sparsity.layers import LayerInfo, fold_batchnorm, layer_infos, prunable_modules
from ptsbench.sparsity.selection import apply_masks, magnitude_masks, measure_sparsity


def test_uniform_gives_every_layer_the_global_rate():
    layers = [LayerInfo("a", (8, 4)), LayerInfo("b", (3, 3, 3, 3)), LayerInfo("c", (10,))]
    rates = build_allocator("uniform").allocate(layers, {}, 0.63)
    assert rates == {"a": 0.63, "b": 0.63, "c": 0.63}


def test_erk_hand_computed_case_with_a_dense_layer():
    # A: 10x10, r = 20/100 = 0.2; B: 10x1, r = 11/10 = 1.1. Budget at S=0.5: keep 55 of 110.
    # eps = 55/31 -> eps*1.1 > 1, so B is dense (keeps 10); then eps*0.2*100 = 45 -> d_A = 0.45.
    d = erk_densities({"A": (10, 10), "B": (10, 1)}, 0.5)
    assert d["B"] == 1.0
    assert d["A"] == pytest.approx(0.45)
    rates = build_allocator("erk").allocate([LayerInfo("A", (10, 10)), LayerInfo("B", (10, 1))], {}, 0.5)
    assert rates == pytest.approx({"A": 0.55, "B": 0.0})


def test_erk_without_clipping_matches_closed_form():
    shapes = {"x": (16, 8, 3, 3), "y": (32, 16, 3, 3)}
    d = erk_densities(shapes, 0.8)
    rx, ry = (16 + 8 + 6) / (16 * 8 * 9), (32 + 16 + 6) / (32 * 16 * 9)
    eps = 0.2 * (1152 + 4608) / (rx * 1152 + ry * 4608)
    assert d["x"] == pytest.approx(eps * rx) and d["y"] == pytest.approx(eps * ry)


def test_erk_power_knob_changes_the_allocation():
    shapes = {"x": (16, 8, 3, 3), "y": (64, 64)}
    assert erk_densities(shapes, 0.7, 1.0) != pytest.approx(erk_densities(shapes, 0.7, 0.5))


def test_l2norm_hand_computed_two_layer_case():
    # scores A = [1,2,3,4]/sqrt(30) = .183 .365 .548 .730; B = [10,.5,.6,.7]/sqrt(101.1) = .995 .050 .060 .070
    # S = 0.5 of 8 weights -> the 4 lowest scores: B's .050 .060 .070 and A's .183 -> A 1/4, B 3/4.
    w = {"A": torch.tensor([[1.0, -2.0], [3.0, 4.0]]), "B": torch.tensor([10.0, -0.5, 0.6, 0.7])}
    layers = [LayerInfo("A", (2, 2)), LayerInfo("B", (4,))]
    assert build_allocator("l2norm").allocate(layers, w, 0.5) == {"A": 0.25, "B": 0.75}


def test_l2norm_ties_at_threshold_keep_the_exact_count():
    w = {"A": torch.ones(10), "B": torch.ones(10)}  # every score equal
    rates = build_allocator("l2norm").allocate([LayerInfo("A", (10,)), LayerInfo("B", (10,))], w, 0.35)
    assert sum(round(r * 10) for r in rates.values()) == 7


def _zoo_modules(arch="cifar_resnet20"):
    torch.manual_seed(0)
    model = zoo.ZOO_ARCHS.get(arch)(10, 1, 28).eval()
    fold_batchnorm(model)
    return model, prunable_modules(model)


@pytest.mark.parametrize("name", ["uniform", "l2norm", "erk"])
@pytest.mark.parametrize("rate", [0.5, 0.6, 0.7, 0.8])
def test_global_rate_within_one_weight_per_layer(name, rate):
    for arch in ("cifar_resnet20", "small_vit_d64"):
        model, modules = _zoo_modules(arch)
        rates = build_allocator(name).allocate(layer_infos(modules), {n: m.weight for n, m in modules.items()}, rate)
        apply_masks(modules, magnitude_masks(modules, rates))
        got = measure_sparsity(modules)
        want = math.floor(rate * got["total"])
        assert abs(got["zeros"] - want) <= len(modules), (arch, got["zeros"], want)
        assert all(0.0 <= r <= 1.0 for r in rates.values())
        if name == "erk":
            assert min(1 - r for r in rates.values()) >= 0.0  # no density above 1


def test_registry_lists_valid_names_on_a_miss():
    with pytest.raises(
        KeyError, match="unknown allocator 'magnitude' for `allocator`; valid choices: .*erk, .*l2norm, .*uniform"
    ):
        ALLOCATORS.get("magnitude")


def test_registry_rejects_duplicates():
    with pytest.raises(KeyError, match="already registered"):
        ALLOCATORS.register("erk")(object)


def test_prunable_layers_include_stem_and_classifier_not_norms():
    model, modules = _zoo_modules()
    assert "conv1" in modules and "fc" in modules
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) for m in modules.values())
