"""The track metrics (paper Eqs. 2-8, docs/methods.md#track-metrics) against hand-computed and published values."""

from __future__ import annotations

import doctest
import math

import pytest

from ptsbench import metrics
from ptsbench.metrics import (
    g_size,
    mean,
    ms,
    om_alloc,
    om_arch,
    om_recon,
    om_robust,
    om_task,
    quadratic_mean,
    recon_gain,
    relative_score,
)


def test_docstring_examples_hold():
    failures, tried = doctest.testmod(metrics)
    assert tried >= 15 and failures == 0


def test_relative_score_inverts_lower_is_better_metrics():
    assert relative_score(0.6, 0.8) == pytest.approx(0.75)
    assert relative_score(sparse=12.0, dense=3.0, higher_is_better=False) == pytest.approx(0.25)
    assert math.isnan(relative_score(0.5, 0.0)) and math.isnan(relative_score(0.0, 2.0, higher_is_better=False))


def test_om_alloc_reproduces_paper_table2_uniform_and_fcpts():
    assert round(100 * om_alloc({"cls": 0.7288, "det": 0.8094, "gen": 0.1640}), 2) == 63.59
    assert round(100 * om_alloc([0.8405, 0.8897, 0.7847]), 2) == 83.94  # L2Norm row
    assert round(100 * om_alloc([0.9120, 0.9589, 0.8780]), 2) == 91.69  # FCPTS (L2Norm) row


def test_ms_is_the_quadratic_mean_of_per_rate_means():
    per_rate = {0.5: 0.9, 0.6: 0.8, 0.7: 0.6, 0.8: 0.2}
    assert ms(per_rate) == pytest.approx(math.sqrt((0.81 + 0.64 + 0.36 + 0.04) / 4))
    # the GEN rows of the paper have one rate: MS is that value
    assert ms({0.5: 0.1640}) == pytest.approx(0.1640)


def test_om_arch_reproduces_paper_table6_resnet_and_vit():
    assert round(100 * om_arch([0.9938, 0.9786, 0.9138, 0.4836]), 2) == 86.81
    assert round(100 * om_arch([0.9950, 0.9752, 0.8999, 0.6241]), 2) == 88.61


def test_g_size_and_om_robust_by_hand():
    sizes = {"18": g_size([1.0, 0.8]), "50": g_size([0.9, 0.5]), "101": g_size([0.7, 0.7])}
    assert sizes["18"] == pytest.approx(math.sqrt((1.0 + 0.64) / 2))
    assert sizes["50"] == pytest.approx(math.sqrt((0.81 + 0.25) / 2))
    assert sizes["101"] == pytest.approx(0.7)
    vals = [100 * v for v in sizes.values()]
    mu = sum(vals) / 3
    assert om_robust(vals) == pytest.approx(math.sqrt(sum((v - mu) ** 2 for v in vals) / 3))  # population std
    assert om_robust([80.0, 80.0]) == 0.0
    assert math.isnan(om_robust([80.0]))


def test_om_task_and_om_recon_by_hand():
    assert om_task([1.0, 0.5]) == pytest.approx(math.sqrt(0.625))
    assert round(100 * om_recon([0.3668, 0.0373, 0.8832]), 2) == 55.26  # paper Table 3, w/ Correction
    assert round(100 * om_recon([0.3181, 0.6139, 0.8832]), 2) == 64.76  # w/o Correction


def test_recon_gain_follows_eqs_3_and_4():
    assert recon_gain(recon=0.70, none=0.40, dense=0.75) == pytest.approx(0.4)
    assert recon_gain(recon=0.30, none=0.40, dense=0.80) == pytest.approx(-0.125)  # reconstruction hurt
    assert recon_gain(10.0, 30.0, 5.0, higher_is_better=False) == pytest.approx(math.exp(5.0 / -20.0))
    # docs/methods.md#decisions bounds the GEN term: 0 when reconstruction did not lower FID (no inf for R -> 0+)
    assert recon_gain(10.0, 10.0, 5.0, higher_is_better=False) == 0.0
    assert recon_gain(30.01, 30.0, 5.0, higher_is_better=False) == 0.0
    assert 0.0 < recon_gain(29.99, 30.0, 5.0, higher_is_better=False) < 1e-200  # exp(5 / -0.01), finite
    assert math.isnan(recon_gain(float("nan"), 30.0, 5.0, higher_is_better=False))


def test_means_ignore_nan_and_empty_is_nan():
    assert mean([0.5, float("nan"), 1.0]) == pytest.approx(0.75)
    assert math.isnan(mean([])) and math.isnan(quadratic_mean([float("nan")]))


def test_classification_docstring_examples_hold():
    from ptsbench.tasks import classification

    failures, tried = doctest.testmod(classification)
    assert tried >= 4 and failures == 0


def test_fidelity_counts_agreeing_top1_and_sums_kl_by_hand():
    import torch

    from ptsbench.tasks.classification import fidelity

    # dense p = (1/2, 1/4, 1/4) on every input (logits ln 2, 0, 0)
    dense = torch.log(torch.tensor([[2.0, 1.0, 1.0]] * 3))
    # sparse: the same distribution; q = (1/4, 1/2, 1/4) (top-1 moves); q = (1/2, 1/8, 3/8) (top-1 kept)
    sparse = torch.log(torch.tensor([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0], [4.0, 1.0, 3.0]]))
    agreeing, kl_sum = fidelity(dense, sparse)
    moved = 0.5 * math.log(2) + 0.25 * math.log(0.5) + 0  # 1/2 ln(2) + 1/4 ln(1/2) + 1/4 ln(1)
    kept = 0 + 0.25 * math.log(2) + 0.25 * math.log(2 / 3)  # 1/4 ln(1/4 / 1/8) + 1/4 ln(1/4 / 3/8)
    assert agreeing == 2 and kl_sum == pytest.approx(moved + kept, abs=1e-7)  # float32 logits
    assert fidelity(dense, dense) == (3, 0.0)
    # logits far beyond exp()'s float range: still finite, and 0 for identical ones
    huge = torch.tensor([[1000.0, -1000.0], [-1000.0, 1000.0]])
    assert fidelity(huge, huge) == (2, 0.0)
    agreeing, kl_sum = fidelity(huge, huge.flip(1))
    assert agreeing == 0 and kl_sum == pytest.approx(2 * 2000.0)


def test_evaluate_classifier_against_itself_agrees_fully_with_zero_kl():
    import torch
    from torch import nn

    from ptsbench.tasks.classification import evaluate_classifier, top1_accuracy

    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    batches = [(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(2)]
    outputs: list = []
    dense = evaluate_classifier(model, batches, outputs=outputs)
    (logits,) = outputs
    assert logits.shape == (10, 3) and torch.equal(logits, torch.cat([model(x) for x, _ in batches]).detach())
    metrics = evaluate_classifier(model, batches, reference=logits)
    assert metrics["agreement"] == 1.0 and metrics["kl"] == 0.0
    assert metrics["top1"] == dense["top1"] == top1_accuracy(model, batches) and set(dense) == {"top1"}
    with pytest.raises(ValueError, match="same test inputs"):
        evaluate_classifier(model, batches[:1], reference=logits)


def test_channels_last_evaluation_changes_kernels_not_scores():
    import torch
    from torch import nn

    from ptsbench.tasks.classification import evaluate_classifier

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, groups=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(), nn.LazyLinear(5)
    )
    batches = [(torch.randn(6, 3, 12, 12), torch.randint(0, 5, (6,))) for _ in range(2)]
    seen = []
    model[0].register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    outputs: list = []
    nchw = evaluate_classifier(model, batches, outputs=outputs)
    nhwc = evaluate_classifier(model, batches, reference=outputs[0], channels_last=True)
    assert seen == [False, False, True, True]  # the knob reaches the forward, batch by batch
    assert nhwc["top1"] == nchw["top1"] and nhwc["agreement"] == 1.0 and nhwc["kl"] < 1e-9
    assert model[0].weight.is_contiguous()  # the weights keep their layout (masks, exports read them)
