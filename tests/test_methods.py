"""Wanda, SparseGPT and N:M (docs/methods.md#decisions): hand-computed scores, an independent OBS
reference, the conv/Linear equivalence, N:M group counts and exact per-layer counts end to end."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptsbench.config.spec import resolve
from ptsbench.errors import ConfigError
from ptsbench.reconstruction.obs import output_error, sparsegpt_prune
from ptsbench.reconstruction.sparsegpt import _hessians, _paired_grams, dense_target_weight
from ptsbench.run import run
from ptsbench.sparsity.criteria import ScoreContext
from ptsbench.sparsity.criteria.wanda import Wanda, input_sq_norms
from ptsbench.sparsity.gemm import add_cross_gram, gemm_weight
from ptsbench.sparsity.selection import (
    keep_mask,
    magnitude_mask,
    nm_column_order,
    nm_keep_mask,
    nm_layout,
    num_pruned,
    prune_lowest,
)

FAST = ["calib.num_samples=64"]


def _wanda_scores(model, x):
    ctx = ScoreContext(dense_model=model, calib_inputs=x, forward=lambda m, b: m(b))
    return Wanda().scores({n: model.get_submodule(n) for n in ("0",)}, ctx)["0"]


def test_wanda_scores_and_masks_on_a_hand_computed_2x4_layer():
    lin = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 4.0, 2.0, -1.0], [-0.5, 3.0, -6.0, 2.0]]))
    x = torch.tensor([[3.0, 0.0, 1.0, 0.0], [4.0, 1.0, 0.0, 2.0]])  # column norms 5, 1, 1, 2
    scores = _wanda_scores(nn.Sequential(lin), x)
    assert scores.tolist() == [[5.0, 4.0, 2.0, 2.0], [2.5, 3.0, 6.0, 4.0]]
    # 2 of 8 pruned. Per layer: the two 2.0s of row 0 (tie -> index order); per row: one each
    assert keep_mask(scores, 2, "layer").tolist() == [[True, True, False, False], [True, True, True, True]]
    assert keep_mask(scores, 2, "row").tolist() == [[True, True, False, True], [False, True, True, True]]
    # magnitude would have pruned |w| = 0.5 and the first 1.0 instead
    assert magnitude_mask(lin.weight, 0.25).tolist() == [[False, True, True, True], [False, True, True, True]]


def _reference_sparsegpt(w, h, k, blocksize, percdamp, nm=None):
    """OBS pruning without Cholesky tricks, lazy blocks or triangular solves: explicit inverses of
    H restricted to the not-yet-processed columns, column by column, every later column updated at
    once (float64). N:M: each group of M columns is chosen when the loop reaches it."""
    w, h = w.double().clone(), h.double().clone()
    c = w.shape[1]
    h += percdamp * h.diagonal().mean() * torch.eye(c, dtype=h.dtype)
    prune = torch.zeros_like(w, dtype=torch.bool)
    starts = list(range(0, c, blocksize))
    for i1 in starts:
        i2 = min(i1 + blocksize, c)
        k_b = (k * i2) // c - (k * i1) // c
        diag = torch.tensor([torch.linalg.inv(h[j:, j:])[0, 0].item() for j in range(i1, i2)], dtype=h.dtype)
        if nm is None:
            sal = w[:, i1:i2].pow(2) / diag
            flat = sorted(range(sal.numel()), key=lambda t: (sal.flatten()[t].item(), t))[:k_b]
            for t in flat:
                prune[t // (i2 - i1), i1 + t % (i2 - i1)] = True
        for j in range(i1, i2):
            if nm is not None and (j - i1) % nm[1] == 0:
                for r in range(w.shape[0]):
                    sal = [(w[r, t].item() ** 2 / diag[t - i1].item(), t) for t in range(j, j + nm[1])]
                    for _, t in sorted(sal)[: nm[1] - nm[0]]:
                        prune[r, t] = True
            hinv = torch.linalg.inv(h[j:, j:])
            for r in range(w.shape[0]):
                if prune[r, j]:
                    w[r, j:] -= w[r, j] / hinv[0, 0] * hinv[0, :]
                    w[r, j] = 0.0
    return w, ~prune


def _correlated_inputs(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) @ torch.randn(c, c, generator=g) + 0.5 * torch.randn(c, generator=g)


def test_sparsegpt_equals_an_independent_obs_reference():
    torch.manual_seed(0)
    w = torch.randn(6, 12)
    x = _correlated_inputs(200, 12, 1)
    h = x.T @ x
    k = 31
    new, keep, _ = sparsegpt_prune(w[None], h[None], k, blocksize=5, percdamp=0.01)
    ref_w, ref_keep = _reference_sparsegpt(w, h, k, 5, 0.01)
    assert torch.equal(keep[0], ref_keep)
    assert int((~keep).sum()) == k and bool((new[0][~keep[0]] == 0).all())
    torch.testing.assert_close(new[0].double(), ref_w, atol=1e-5, rtol=0)


def test_sparsegpt_two_four_equals_the_column_by_column_reference():
    torch.manual_seed(3)
    w = torch.randn(5, 16)
    x = _correlated_inputs(300, 16, 4)
    h = x.T @ x
    new, keep, _ = sparsegpt_prune(w[None], h[None], blocksize=8, percdamp=0.01, nm=(2, 4))
    ref_w, ref_keep = _reference_sparsegpt(w, h, 0, 8, 0.01, nm=(2, 4))
    assert torch.equal(keep[0], ref_keep)
    assert bool(((~keep[0]).reshape(5, 4, 4).sum(-1) == 2).all())
    torch.testing.assert_close(new[0].double(), ref_w, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["layer", "row", "nm"])
def test_sparsegpt_never_worse_than_magnitude_at_the_same_count(mode):
    for seed in range(5):
        torch.manual_seed(seed)
        w = torch.randn(16, 64)
        x = _correlated_inputs(400, 64, 100 + seed)
        h = (x.T @ x)[None]
        if mode == "nm":
            mag = nm_keep_mask(w.abs(), 2, 4)
            new, keep, _ = sparsegpt_prune(w[None], h, blocksize=16, nm=(2, 4))
        else:
            mag = keep_mask(w.abs(), num_pruned(0.6, w.numel()), mode)
            new, keep, _ = sparsegpt_prune(w[None], h, int((~mag).sum()), blocksize=16, group=mode)
        assert int((~keep).sum()) == int((~mag).sum())
        if mode == "row":
            assert torch.equal((~keep[0]).sum(1), (~mag).sum(1))
        err_sgpt = output_error(w[None] - new, h, len(x))
        err_mag = output_error((w * ~mag)[None] - w[None], h, len(x))
        assert err_sgpt < err_mag


def test_conv_via_unfold_equals_the_linear_formulation():
    torch.manual_seed(0)
    for groups in (1, 2):
        conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=groups, bias=False)
        x = torch.randn(5, 4, 9, 9)
        cols = F.unfold(x, 3, padding=1, stride=2)  # (N, 4*9, L), rows in (channel, kh, kw) order
        per_group = cols.reshape(5, groups, -1, cols.shape[-1])
        h_conv, n_conv = _hessians(lambda conv=conv, x=x: conv(x), {"c": conv})
        norms = input_sq_norms(
            nn.Sequential(conv), {"0": conv}, ScoreContext(calib_inputs=x, forward=lambda m, b: m(b))
        )["0"]
        for g in range(groups):
            xg = per_group[:, g].transpose(1, 2).reshape(-1, per_group.shape[2])  # (N*L, cols)
            lin = nn.Linear(xg.shape[1], 6 // groups, bias=False)
            with torch.no_grad():
                lin.weight.copy_(gemm_weight(conv)[g])
            h_lin, n_lin = _hessians(lambda lin=lin, xg=xg: lin(xg), {"l": lin})
            torch.testing.assert_close(h_conv["c"][g], h_lin["l"][0])
            torch.testing.assert_close(norms[g], xg.pow(2).sum(0))
            assert n_conv["c"] == n_lin["l"]  # input columns per group
            new_lin, keep_lin, _ = sparsegpt_prune(gemm_weight(lin).detach(), h_lin["l"], 20, blocksize=8)
            new_conv, keep_conv, _ = sparsegpt_prune(
                gemm_weight(conv)[g : g + 1].detach(), h_conv["c"][g : g + 1], 20, blocksize=8
            )
            assert torch.equal(keep_lin, keep_conv)
            torch.testing.assert_close(new_lin, new_conv)


def test_dense_target_minimises_the_asymmetric_objective():
    """reconstruction.target=dense: W' = W_d C H^-1 turns ||W_d X_d - W X_s||^2 into const + ||(W' - W) X_s||^2,
    so SparseGPT on W' beats the reference (W_d on X_s) on the dense layer's output; with X_d = X_s, W' = W_d."""
    for seed in range(3):
        torch.manual_seed(seed)
        w = torch.randn(12, 32, dtype=torch.float64)
        x_d = _correlated_inputs(300, 32, 200 + seed).double()
        # the sparse model's input: upstream pruning damped some features and added noise
        x_s = x_d * torch.linspace(0.5, 1.0, 32, dtype=torch.float64) + 0.1 * torch.randn_like(x_d)
        h, c = (x_s.T @ x_s)[None], (x_d.T @ x_s)[None]
        w_target = dense_target_weight(w[None], h, c, percdamp=0.0).double()
        for probe in (torch.zeros_like(w), torch.randn_like(w)):  # the identity, for any W
            lhs = (x_d @ w.T - x_s @ probe.T).pow(2).sum() - (x_d @ w.T - x_s @ w_target[0].T).pow(2).sum()
            torch.testing.assert_close(lhs, ((x_s @ (w_target[0] - probe).T).pow(2).sum()), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(dense_target_weight(w[None], h, h, percdamp=0.0).double(), w[None])
        k = 32 * 12 * 7 // 10
        ref, ref_keep, _ = sparsegpt_prune(w[None], h, k, blocksize=16)
        asym, asym_keep, _ = sparsegpt_prune(w_target, h, k, blocksize=16)
        assert int((~ref_keep).sum()) == int((~asym_keep).sum()) == k and bool((asym[~asym_keep] == 0).all())
        dense_out = x_d @ w.T
        assert (dense_out - x_s @ asym[0].T).pow(2).sum() < (dense_out - x_s @ ref[0].T).pow(2).sum()


def test_paired_grams_pair_the_dense_and_sparse_inputs_of_a_conv():
    torch.manual_seed(0)
    conv, dense_conv = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
    x_s, x_d = torch.randn(6, 3, 5, 5), torch.randn(6, 3, 5, 5)
    h, c, n = _paired_grams(
        lambda i: conv(x_s[3 * i : 3 * i + 3]), lambda i: dense_conv(x_d[3 * i : 3 * i + 3]), 2, conv, dense_conv
    )
    cols_s = F.unfold(x_s, 3, padding=1).transpose(1, 2).reshape(-1, 27)
    cols_d = F.unfold(x_d, 3, padding=1).transpose(1, 2).reshape(-1, 27)
    torch.testing.assert_close(h[0], cols_s.T @ cols_s, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(c[0], cols_d.T @ cols_s, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(add_cross_gram(conv, x_s, x_s, None), h, rtol=1e-4, atol=1e-4)
    assert n == 6 * 25


def _assert_nm(weight: torch.Tensor, n: int, m: int):
    groups = (nm_layout(weight) != 0).reshape(-1, m).sum(1)
    assert int(groups.max()) <= n
    assert int((groups == n).sum()) == groups.numel()  # random weights: exactly n survive each group


def test_two_four_masks_along_the_input_channels_for_linear_and_conv():
    torch.manual_seed(0)
    lin, conv = nn.Linear(16, 8), nn.Conv2d(4, 8, 3, padding=1)  # conv: 4 channels at each of 9 kernel positions
    x_lin, x_conv = torch.randn(32, 16), torch.randn(4, 4, 6, 6)
    for layer, x in ((lin, x_lin), (conv, x_conv)):
        w = layer.weight.detach()
        _assert_nm(w * nm_keep_mask(w.abs(), 2, 4), 2, 4)
        _assert_nm(w * nm_keep_mask(_wanda_scores(nn.Sequential(layer), x), 2, 4), 2, 4)
        h, _ = _hessians(lambda layer=layer, x=x: layer(x), {"l": layer})
        order = nm_column_order(w.shape)
        new, _, _ = sparsegpt_prune(gemm_weight(layer).detach(), h["l"], blocksize=12, nm=(2, 4), order=order)
        _assert_nm(new.reshape(w.shape), 2, 4)
    # the axis is the input channels at each kernel position: the flattened (channel, kh, kw) row would not pass
    w = conv.weight.detach()
    flattened = w * (~prune_lowest(w.abs().reshape(-1, 4), 2)).reshape(w.shape)
    with pytest.raises(AssertionError):
        _assert_nm(flattened, 2, 4)


@pytest.mark.parametrize(
    "overrides",
    [
        ["sparsity.criterion=wanda", "allocator=erk", "sparsity.rate=0.7"],
        ["sparsity.criterion=wanda", "sparsity.group=row", "allocator=l2norm", "sparsity.rate=0.6"],
        ["reconstruction=sparsegpt", "allocator=erk", "sparsity.rate=0.7"],
        ["reconstruction=sparsegpt", "sparsity.group=row", "sparsity.rate=0.6"],
        ["sparsity=nm"],
        ["sparsity=nm", "sparsity.criterion=wanda"],
        ["sparsity=nm", "reconstruction=sparsegpt", "model=zoo_vit_d64"],
    ],
)
def test_every_method_keeps_exact_counts_and_zeros(make_cfg, overrides):
    rec = run(make_cfg(*overrides, *FAST))
    sp = rec["sparsity"]
    for name, target in sp["target_per_layer"].items():
        assert sp["achieved_per_layer"][name] == pytest.approx(
            num_pruned(target, _numel(rec, name)) / _numel(rec, name), abs=1e-12
        )
    if rec["masks"]["pattern"] == "nm":
        dense = rec["masks"]["dense_layers"]
        assert dense and all(sp["achieved_per_layer"][n] == 0 for n in dense)
        assert all(sp["achieved_per_layer"][n] == 0.5 for n in sp["target_per_layer"] if n not in dense)
        assert sp["achieved"] < 0.5
    else:
        assert sp["achieved"] == pytest.approx(float(overrides[-1].split("=")[1]), abs=1e-4)
    if rec["reconstruction"]["name"] == "sparsegpt":
        layers = rec["reconstruction"]["layers"]
        assert len(layers) == sum(1 for t in sp["target_per_layer"].values() if t > 0)
        assert sum(e["error_after"] for e in layers) < sum(e["error_before"] for e in layers)


_NUMEL: dict = {}


def _numel(rec, name):
    """Weight count of ``name`` in the record's zoo architecture (MNIST: 1 channel, 28 px, 10 classes)."""
    arch = rec["config"]["model"]["arch"]
    if arch not in _NUMEL:
        from ptsbench.models.zoo import ZOO_ARCHS

        model = ZOO_ARCHS.get(arch)(10, 1, 28)
        _NUMEL[arch] = {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    return _NUMEL[arch][name]


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["sparsity=nm", "allocator=erk"], "allocator=erk with sparsity=nm.*valid choices with nm: uniform"),
        (["sparsity=nm", "sparsity.rate=0.7"], "sparsity.rate=0.7 with sparsity=nm n=2 m=4.*sparsity.rate=0.5"),
        (["sparsity=nm", "sparsity.n=4"], "need integers 0 < n < m"),
        (["sparsity=nm", "reconstruction=sparsegpt", "reconstruction.blocksize=6"], "reconstruction.blocksize=6"),
        (["sparsity.criterion=taylor"], "sparsity.criterion='taylor'; valid choices: magnitude, ria, wanda"),
        (["sparsity.group=column"], "sparsity.group='column'; valid choices: layer, row"),
        (["reconstruction=sparsegpt", "sparsity.criterion=wanda"], "SparseGPT selects its own masks"),
        (["reconstruction=sparsegpt", "reconstruction.percdamp=-1"], "reconstruction.percdamp=-1"),
    ],
)
def test_bad_method_knobs_fail_before_any_work(make_cfg, overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        resolve(make_cfg(*overrides))


def _record(
    model, rate, sparse, *, criterion="magnitude", recon="none", pattern="unstructured", seconds=1.0, calib_seed=0
):
    from synthetic_records import cls_record

    sp = {"rate": rate, "pattern": pattern, "criterion": criterion, **({"n": 2, "m": 4} if pattern == "nm" else {})}
    timing = {"allocate": 0.5, "mask": 0.5, "reconstruct": seconds, "total": 9.0}
    achieved = 0.45 if pattern == "nm" else rate
    return cls_record(model, sparse, sparsity=sp, recon=recon, calib_seed=calib_seed, achieved=achieved, timing=timing)


def test_methods_table_matches_cells_and_keeps_paper_tables_clean(tmp_path):
    from ptsbench.records import write_json_atomic
    from ptsbench.tables import build_tables, load_runs, methods_table

    recs = [
        _record("m_a", 0.7, 0.50),
        _record("m_b", 0.7, 0.30),
        _record("m_a", 0.7, 0.60, criterion="wanda"),
        _record("m_b", 0.7, 0.40, criterion="wanda"),
        _record("m_a", 0.7, 0.90, recon="sparsegpt", seconds=3.0),  # m_b has no SparseGPT run
        _record("m_a", 0.5, 0.80, pattern="nm"),
        _record("m_a", 0.5, 0.85, recon="sparsegpt", pattern="nm"),
    ]
    for r in recs:
        write_json_atomic(tmp_path / f"{r['name']}.json", r)
    runs = load_runs(tmp_path)
    table = methods_table(runs)
    v = table.values
    # matched on m_a only (the one cell every method of CLS 70 has): 50, 60, 90
    assert v.loc[("CLS", "70 ERK", "Magnitude"), "score"] == pytest.approx(50)
    assert v.loc[("CLS", "70 ERK", "Wanda (layer)"), "score"] == pytest.approx(60)
    assert v.loc[("CLS", "70 ERK", "SparseGPT"), "gain vs Magnitude"] == pytest.approx(40)
    assert v.loc[("CLS", "70 ERK", "SparseGPT"), "time s"] == pytest.approx(4.0)
    assert v.loc[("CLS", "70 ERK", "Wanda (layer)"), "cells"] == 1
    assert v.loc[("CLS", "2:4 ERK", "SparseGPT"), "score"] == pytest.approx(85)
    assert v.loc[("CLS", "2:4 ERK", "Magnitude"), "achieved %"] == pytest.approx(45)
    assert any("1 cell(s) left out" in n for n in table.notes)
    assert [(g["row"], g["model"]) for g in table.gaps] == [("CLS 70 ERK SparseGPT", "m_b")]
    # Table 2 (allocation) sees only the magnitude unstructured runs: ERK at 70 = mean(50, 30)
    (t2, *_), _ = build_tables(runs)
    assert t2.values.loc["ERK", "CLS 70"] == pytest.approx(40)


def test_methods_table_cells_are_per_calibration_seed_with_intervals(tmp_path):
    from ptsbench.records import write_json_atomic
    from ptsbench.tables import load_runs, methods_table
    from ptsbench.tables.render import to_markdown

    recs = [_record(m, 0.7, 0.2) for m in ("m_a", "m_b")]  # magnitude + ERK reads no calibration data
    recs += [
        _record(m, 0.7, acc, recon="sparsegpt", calib_seed=s)
        for (m, s), acc in {("m_a", 0): 0.90, ("m_a", 1): 0.80, ("m_b", 0): 0.70, ("m_b", 1): 0.60}.items()
    ]
    for r in recs:
        write_json_atomic(tmp_path / f"{r['name']}.json", r)
    table = methods_table(load_runs(tmp_path))
    v = table.values
    # 2 models x 2 calibration seeds; each magnitude run stands for both seeds of its model
    assert v.loc[("CLS", "70 ERK", "SparseGPT"), "cells"] == v.loc[("CLS", "70 ERK", "Magnitude"), "cells"] == 4
    assert v.loc[("CLS", "70 ERK", "SparseGPT"), "score"] == pytest.approx(75)
    from ptsbench.tables.cells import tidy

    cell = tidy(table.plan, table.est[(("CLS", "70 ERK", "SparseGPT"), "score")], "methods", "", "CLS", "score", 0.7)
    assert (cell["n_models"], cell["n_runs"]) == (2, 4) and not table.gaps
    # the interval is over the 2 models' seed-means (85, 65): 75 ± t(0.975, 1) * 10
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx((75 - 127.062, 75 + 127.062), abs=1e-3)
    assert re.search(r"\| (\*\*)?75\.00(\*\*)? ± 127\.06 \|", to_markdown(table))


@pytest.mark.parametrize(
    "kw",
    [
        dict(dilation=2, padding=2, padding_mode="reflect"),
        dict(stride=3, padding="valid"),
        dict(padding="same", padding_mode="circular"),
    ],
)
def test_wanda_norms_without_unfold_equal_the_unfolded_ones(kw):
    from ptsbench.sparsity.gemm import input_slices, input_sq_sums

    conv = nn.Conv2d(4, 6, 3, groups=2, **kw)
    x = torch.randn(3, 4, 11, 10)
    unfolded = sum(xs.pow(2).sum(1) for xs in input_slices(conv, x))
    torch.testing.assert_close(input_sq_sums(conv, x), unfolded)


def _im2col_gram(conv, x_left, x_right):
    from ptsbench.sparsity.gemm import input_slices

    return sum(
        left.transpose(1, 2) @ right
        for left, right in zip(input_slices(conv, x_left), input_slices(conv, x_right), strict=True)
    )


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=5, padding=2, dilation=2),
        dict(kernel_size=3, padding=0),
        dict(kernel_size=(3, 1), padding=(1, 0)),
        dict(kernel_size=3, padding=1, groups=2),
        dict(kernel_size=3, padding=1, groups=6),
        dict(kernel_size=4, padding="same"),
        dict(kernel_size=1),
        dict(kernel_size=3, padding=2),
        dict(kernel_size=(2, 5), padding=(3, 1), dilation=(2, 1)),
    ],
)
@pytest.mark.parametrize("hw", [(9, 7), (2, 2)])
def test_lag_gram_equals_the_im2col_gram(kw, hw, monkeypatch):
    """The per-lag Hessian (no im2col) is the same sum as the im2col one, symmetric and cross,
    down to float64 rounding, border windows and maps smaller than the kernel included."""
    from ptsbench.sparsity import conv_gram
    from ptsbench.sparsity.conv_gram import applies, lag_gram
    from ptsbench.sparsity.gemm import add_input_gram

    monkeypatch.setattr(conv_gram, "MIN_POSITIONS", 0)  # small inputs take the lag path too

    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, **kw).double()
    x, y = torch.randn(3, 6, *hw, dtype=torch.float64), torch.randn(3, 6, *hw, dtype=torch.float64)
    if not applies(conv, x):
        with pytest.raises(RuntimeError):  # the only reason to refuse: no output position at all
            conv(x)
        return
    torch.testing.assert_close(lag_gram(conv, x), _im2col_gram(conv, x, x), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(lag_gram(conv, x, y), _im2col_gram(conv, x, y), rtol=1e-12, atol=1e-10)
    with monkeypatch.context() as m:  # the entry point takes the lag path
        m.setattr(conv_gram, "lag_gram", lambda *a: lag_gram(*a).mul(2))
        h, count = add_input_gram(conv, x, None)
    torch.testing.assert_close(h, 2 * _im2col_gram(conv, x, x), rtol=1e-12, atol=1e-10)
    assert count == 3 * conv(x).shape[-2] * conv(x).shape[-1]


def test_the_lag_gram_is_for_cpu_inputs_only():
    """On a GPU one im2col GEMM beats the per-lag Grams (measured 0.07x-0.70x on an H200): a non-CPU
    input (a meta tensor stands for CUDA here) takes im2col, the same input on the CPU the lag path."""
    from ptsbench.sparsity.conv_gram import MIN_POSITIONS, applies

    conv = nn.Conv2d(4, 4, 3, padding=1)
    n = MIN_POSITIONS // 64 + 1
    assert applies(conv, torch.empty(n, 4, 8, 8))
    assert not applies(conv, torch.empty(n, 4, 8, 8, device="meta"))


@pytest.mark.parametrize(
    "kw, n", [(dict(stride=2, padding=1), 40), (dict(padding=1, padding_mode="reflect"), 40), (dict(padding=1), 2)]
)
def test_convs_outside_the_lag_gram_keep_the_im2col_path(kw, n):
    from ptsbench.sparsity.conv_gram import applies
    from ptsbench.sparsity.gemm import add_input_gram

    conv = nn.Conv2d(4, 4, 3, **kw).double()
    x = torch.randn(n, 4, 8, 8, dtype=torch.float64)
    assert not applies(conv, x)
    torch.testing.assert_close(add_input_gram(conv, x, None)[0], _im2col_gram(conv, x, x))
