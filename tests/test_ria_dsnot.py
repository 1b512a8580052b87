"""RIA scores against a direct computation, and DSnoT mask refinement: a hand-worked row, exact
counts, the expected output error on the calibration inputs never rising, and the GEMM-view input
statistics against an explicit im2col."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptsbench.sparsity.criteria import ScoreContext
from ptsbench.sparsity.criteria.ria import RIA, ria_scores
from ptsbench.sparsity.gemm import gemm_weight, input_slices
from ptsbench.sparsity.refine_dsnot import InputMoments, dsnot_refine, input_moments, refine_masks
from ptsbench.sparsity.selection import keep_mask


def test_ria_scores_equal_the_formula_computed_entry_by_entry():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3, bias=False)
    x = torch.randn(40, 5) * torch.tensor([1.0, 3.0, 0.1, 2.0, 0.5])
    ctx = ScoreContext(dense_model=nn.Sequential(lin), calib_inputs=x, forward=lambda m, b: m(b))
    got = RIA().scores({"0": lin}, ctx)["0"]
    w = lin.weight.detach().abs().double()
    norms = x.double().pow(2).sum(0).sqrt()
    for i in range(3):
        for j in range(5):
            want = (w[i, j] / w[i].sum() + w[i, j] / w[:, j].sum()) * norms[j] ** 0.5
            assert got[i, j].item() == pytest.approx(want.item(), rel=1e-5)


def test_ria_on_a_grouped_conv_normalises_within_each_group():
    w = torch.arange(1.0, 17.0).reshape(2, 2, 4)  # 2 groups of a 2x4 GEMM
    s = ria_scores(w, None)
    for g in range(2):
        ref = w[g] / w[g].sum(1, keepdim=True) + w[g] / w[g].sum(0, keepdim=True)
        torch.testing.assert_close(s[g], ref)


def test_ria_keeps_a_column_that_magnitude_would_empty():
    # column 3 is small everywhere: per layer, magnitude prunes all of it, RIA keeps its largest share
    w = torch.tensor([[4.0, 5.0, 6.0, 0.3], [5.0, 4.0, 6.0, 0.2], [6.0, 5.0, 4.0, 0.1]])
    rel = ria_scores(w[None], None)[0]
    assert bool(keep_mask(rel, 3, "layer")[:, 3].any())
    assert not bool(keep_mask(w.abs(), 3, "layer")[:, 3].any())


def _moments(mean, var=None, sq=None):
    mean = torch.tensor([mean])
    return InputMoments(
        mean, torch.ones_like(mean) if var is None else var, torch.ones_like(mean) if sq is None else sq, 1
    )


def test_dsnot_hand_worked_row():
    # e = 1 + 2 = 3 (weights 0 and 1 pruned, mean input 1). Regrow the largest c > 0 (index 1, c = 2),
    # prune the only kept c < 0 (index 2): e' = 3 - 2 - 0.5 = 0.5 > 0, accepted. Next cycle: no kept
    # weight with c < 0 is left, so the row stops.
    w = torch.tensor([[[1.0, 2.0, -0.5, 3.0]]])
    keep = torch.tensor([[[False, False, True, True]]])
    new, swaps = dsnot_refine(w, keep, _moments([1.0, 1.0, 1.0, 1.0]))
    assert new.tolist() == [[[False, True, False, True]]]
    assert swaps.tolist() == [[1]]


def test_dsnot_refuses_a_swap_that_flips_the_error_sign():
    w = torch.tensor([[[1.0, 2.0, -1.5, 3.0]]])  # e' = 3 - 2 - 1.5 = -0.5: sign flips, refused
    keep = torch.tensor([[[False, False, True, True]]])
    new, swaps = dsnot_refine(w, keep, _moments([1.0, 1.0, 1.0, 1.0]))
    assert torch.equal(new, keep) and swaps.tolist() == [[0]]


def test_dsnot_regrows_the_lower_variance_feature_first():
    w = torch.tensor([[[2.0, 2.0, -0.1, 5.0, 5.0]]])
    keep = torch.tensor([[[False, False, True, True, True]]])
    var = torch.tensor([[4.0, 1.0, 1.0, 1.0, 1.0]])  # same contribution, feature 1 is steadier
    new, _ = dsnot_refine(w, keep, _moments([1.0] * 5, var=var), max_cycles=1)
    assert new[0, 0].tolist() == [False, True, False, True, True]


def _mean_row_error(w, keep, x):
    return ((w * ~keep) @ x.T).mean(1).abs()  # |mean over calibration inputs of (W - W_s) x| per row


@pytest.mark.parametrize("seed", range(4))
def test_dsnot_keeps_counts_and_never_raises_the_expected_error_on_the_calibration_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(12, 40, generator=g)
    x = torch.randn(300, 40, generator=g) * torch.rand(40, generator=g) * 2 + torch.randn(40, generator=g)
    lin = nn.Linear(40, 12, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    model = nn.Sequential(lin)
    moments = input_moments(model, ["0"], x)
    wanda = w.abs() * x.pow(2).sum(0).sqrt()
    keep = keep_mask(wanda, 300, "layer")
    new, report = refine_masks({"0": lin}, {"0": keep}, moments)
    new = new["0"]
    assert torch.equal(new.sum(1), keep.sum(1))  # every row's count, hence the layer's
    before, after = _mean_row_error(w.double(), keep, x.double()), _mean_row_error(w.double(), new, x.double())
    assert bool((after <= before + 1e-9).all())
    assert report["dsnot_swaps"]["0"] > 0 and float(after.sum()) < float(before.sum())


def test_input_moments_of_a_grouped_strided_conv_equal_an_explicit_im2col():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False)
    x = torch.randn(5, 4, 9, 9) + 0.7
    m = input_moments(nn.Sequential(conv), ["0"], x)["0"]
    cols = torch.cat(list(input_slices(conv, x.double())), dim=1)  # (G, n, cols)
    torch.testing.assert_close(m.mean.double(), cols.mean(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(m.var.double(), cols.var(1, unbiased=False), atol=1e-6, rtol=0)
    torch.testing.assert_close(m.sq_norm.double(), cols.pow(2).sum(1), atol=0, rtol=1e-6)
    assert m.count == cols.shape[1]


def test_refine_masks_on_a_depthwise_conv_keeps_every_row_count():
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
    x = torch.randn(8, 6, 7, 7) + 0.5
    moments = input_moments(nn.Sequential(conv), ["0"], x)
    w = gemm_weight(conv).detach()
    keep = keep_mask(w.abs().reshape(6, 9), 30, "row").reshape(conv.weight.shape)
    new, _ = refine_masks({"0": conv}, {"0": keep}, moments)
    assert torch.equal(new["0"].reshape(6, 9).sum(1), keep.reshape(6, 9).sum(1))


@pytest.mark.parametrize(
    "allocator, sparsity, recon, label",
    [
        ("erk", {"criterion": "wanda", "group": "row"}, "none", "Wanda"),
        ("erk", {"criterion": "wanda"}, "none", "Wanda (layer)"),
        ("erk", {"criterion": "ria"}, "none", "RIA"),
        ("erk", {"criterion": "wanda", "group": "row", "refine": "dsnot"}, "none", "Wanda + DSnoT"),
        ("erk", {"criterion": "magnitude", "refine": "dsnot"}, "none", "Magnitude + DSnoT"),
        ("erk", {"criterion": "magnitude", "group": "row"}, "none", "Magnitude (row)"),
        # the allocator is a coordinate of the methods table's cells, not part of a row's label
        ("owl", {"criterion": "wanda", "group": "row"}, "none", "Wanda"),
        ("owl", {"criterion": "magnitude"}, "sparsegpt", "SparseGPT"),
    ],
)
def test_methods_table_labels(allocator, sparsity, recon, label):
    from ptsbench.tables.labels import method_label
    from ptsbench.tables.methods import METHOD_ORDER

    got = method_label(sparsity, {"name": recon})
    assert got == label
    assert got.split(" (")[0] in METHOD_ORDER
