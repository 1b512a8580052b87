"""Hardware N:M: groups of M input channels at each kernel position (the layout sparse tensor cores accept),
checked on hand-built conv weights, through every criterion and SparseGPT, on every zoo CNN, and the
mirror of PyTorch's 2:4 conversion constraints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from ptsbench.models import build_model, zoo_checkpoint_path
from ptsbench.models.zoo import ZOO_ARCHS
from ptsbench.reconstruction.obs import sparsegpt_prune
from ptsbench.reconstruction.sparsegpt import _hessians
from ptsbench.schemas import build
from ptsbench.sparsity import mask_phase
from ptsbench.sparsity.criteria import ScoreContext
from ptsbench.sparsity.deployable import (
    SEMI_STRUCTURED_MIN_SHAPE,
    deployable_report,
    is_deployable_nm,
    semi_structured_rejection,
)
from ptsbench.sparsity.gemm import gemm_weight
from ptsbench.sparsity.layers import fold_batchnorm, prunable_modules
from ptsbench.sparsity.mask_phase import NMConfig
from ptsbench.sparsity.selection import apply_masks, nm_column_order, nm_fits, nm_keep_mask


def test_two_four_on_a_hand_built_conv_groups_the_channels_of_each_kernel_position():
    # one output, 4 input channels, a 1x2 kernel: position 0 sees channel scores 1 4 2 3, position 1 sees 8 5 7 6
    scores = torch.tensor([[1.0, 8.0], [4.0, 5.0], [2.0, 7.0], [3.0, 6.0]]).reshape(1, 4, 1, 2)
    keep = nm_keep_mask(scores, 2, 4)
    # position 0 keeps channels 1 and 3 (4, 3); position 1 keeps channels 0 and 2 (8, 7)
    assert keep[0, :, 0, 0].tolist() == [False, True, False, True]
    assert keep[0, :, 0, 1].tolist() == [True, False, True, False]
    # the old flattened (c, kh, kw) groups would have been (1 8 4 5) (2 7 3 6): keep 8 5 | 7 6
    flat = [False, True, False, True, False, True, False, True]
    assert keep.reshape(-1).tolist() != flat
    assert is_deployable_nm(scores * keep, 2, 4)
    assert not is_deployable_nm(scores * torch.tensor(flat).reshape(1, 4, 1, 2), 2, 4)


def test_fitting_depends_on_input_channels_per_group_not_on_the_flattened_length():
    cases = {
        (8, 4, 3, 3): True,  # 4 channels per group
        (8, 2, 2, 2): False,  # 8 weights per row, but 2 channels: no whole group of 4 at a position
        (8, 1, 3, 3): False,  # depthwise
        (8, 6, 1, 1): False,
        (16, 8, 3, 3): True,  # a grouped conv with 8 channels per group
        (10, 12): True,  # Linear: in_features
        (10, 6): False,
    }
    for shape, fits in cases.items():
        assert nm_fits(shape, 4) is fits, shape
    assert nm_fits((8, 6, 1, 1), 2) and nm_fits((8, 6, 3, 3), 3)
    with pytest.raises(ValueError, match=r"shape \(8, 2, 2, 2\) has 2 input channels per group, not a multiple of 4"):
        nm_keep_mask(torch.rand(8, 2, 2, 2), 2, 4)


def test_deployable_report_sorts_layers_into_deployable_misfit_and_violating():
    torch.manual_seed(0)
    conv = torch.randn(8, 8, 3, 3)
    depthwise = torch.randn(8, 1, 3, 3)
    grouped = torch.randn(8, 4, 3, 3)  # Conv2d(8, 8, 3, groups=2): 4 channels per group
    report = deployable_report(
        {
            "conv": conv * nm_keep_mask(conv.abs(), 2, 4),
            "dense_conv": conv,
            "depthwise": depthwise,
            "grouped": grouped * nm_keep_mask(grouped.abs(), 2, 4),
        },
        2,
        4,
    )
    assert report == {"deployable": ["conv", "grouped"], "misfit": ["depthwise"], "violating": ["dense_conv"]}
    # 3 of 4 kept in a single group is enough to fail
    w = conv * nm_keep_mask(conv.abs(), 2, 4)
    w[0, :4, 1, 1] = torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert not is_deployable_nm(w, 2, 4) and is_deployable_nm(w, 3, 4)


def test_nm_column_order_lists_the_gemm_columns_of_each_kernel_position_together():
    order = nm_column_order((5, 3, 2, 2))  # GEMM column of (c, kh, kw) is c * 4 + kh * 2 + kw
    assert order.tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    assert nm_column_order((5, 7)) is None


@pytest.mark.parametrize("criterion", ["magnitude", "wanda"])
def test_every_criterion_selects_channel_axis_groups(criterion):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 25, 8)
    )
    modules = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    cfg = build("sparsity", NMConfig, {"pattern": "nm", "rate": 0.5, "n": 2, "m": 4, "criterion": criterion})
    rates, info = mask_phase.pattern_rates(cfg, modules, dict.fromkeys(modules, 0.5))
    ctx = ScoreContext(dense_model=model, calib_inputs=torch.randn(16, 8, 5, 5), forward=lambda m, x: m(x))
    masks, _ = mask_phase.select_masks(cfg, modules, rates, ctx)
    apply_masks(modules, masks)
    assert info["dense_layers"] == []
    for name, m in modules.items():
        assert is_deployable_nm(m.weight, 2, 4), name
        assert int((m.weight != 0).sum()) == m.weight.numel() // 2


def _reference_nm_obs(w, h, n, m, percdamp):
    """N:M OBS column by column on explicit inverses of H over the not-yet-processed columns (float64):
    each group of M columns picks its M-N lowest w^2 / [H_F^-1]_jj when reached, then every pruned
    column's error is spread over the later columns."""
    w, h = w.double().clone(), h.double().clone()
    c = w.shape[1]
    h += percdamp * h.diagonal().mean() * torch.eye(c, dtype=h.dtype)
    keep = torch.ones_like(w, dtype=torch.bool)
    for g0 in range(0, c, m):
        diag = torch.stack([torch.linalg.inv(h[j:, j:])[0, 0] for j in range(g0, g0 + m)])
        sal = w[:, g0 : g0 + m].pow(2) / diag
        order = torch.sort(sal, dim=1, stable=True).indices[:, : m - n]
        prune = torch.zeros_like(sal, dtype=torch.bool).scatter_(1, order, True)
        keep[:, g0 : g0 + m] = ~prune
        for j in range(g0, g0 + m):
            hinv = torch.linalg.inv(h[j:, j:])
            err = torch.where(prune[:, j - g0], w[:, j] / hinv[0, 0], torch.zeros_like(w[:, j]))
            w[:, j:] -= err[:, None] * hinv[0][None, :]
            w[prune[:, j - g0], j] = 0.0
    return w, keep


def test_sparsegpt_nm_on_a_conv_prunes_channel_groups_and_matches_a_column_by_column_reference():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, padding=1, bias=False).double()
    x = torch.randn(12, 8, 6, 6, dtype=torch.float64)
    h, _ = _hessians(lambda: conv(x), {"c": conv})
    w = gemm_weight(conv).detach()
    order = nm_column_order(conv.weight.shape)
    new, keep, _ = sparsegpt_prune(w, h["c"], blocksize=16, percdamp=0.01, nm=(2, 4), order=order)
    new_w, keep_w = new.reshape(conv.weight.shape), keep.reshape(conv.weight.shape)
    assert is_deployable_nm(new_w, 2, 4)
    assert torch.equal(keep_w, new_w != 0)
    assert int((~keep_w).sum()) == conv.weight.numel() // 2
    # independent reference: the unfolded input with its features in (kh, kw, c) order, built by hand
    cols = F.unfold(x, 3, padding=1)  # (N, c*9, L), (c, kh, kw) order
    feats = cols.reshape(12, 8, 9, -1).permute(0, 3, 2, 1).reshape(-1, 72)  # rows: (n, L); cols: (kh, kw, c)
    w_khkwc = conv.weight.detach().permute(0, 2, 3, 1).reshape(6, 72)
    ref_w, ref_keep = _reference_nm_obs(w_khkwc, feats.T @ feats, 2, 4, 0.01)
    back = lambda t: t.reshape(6, 3, 3, 8).permute(0, 3, 1, 2)  # noqa: E731
    assert torch.equal(keep_w, back(ref_keep))
    torch.testing.assert_close(new_w, back(ref_w), atol=1e-8, rtol=0)


# the zoo CNNs with a shipped checkpoint (cifar_vgg19 registers an architecture without one)
ZOO_CNNS = [a for a in ZOO_ARCHS if not a.startswith("small_vit") and zoo_checkpoint_path(a, "mnist5k").exists()]


@pytest.mark.parametrize("arch", ZOO_CNNS)
def test_every_zoo_cnn_at_two_four_is_deployable_on_every_fitting_layer(arch):
    model = build_model(OmegaConf.create({"arch": arch, "source": "zoo", "weights": "zoo"}), 10, 1, 28, "mnist5k")
    fold_batchnorm(model)
    modules = prunable_modules(model)
    sp = build("sparsity", NMConfig, {"pattern": "nm", "rate": 0.5, "n": 2, "m": 4, "criterion": "magnitude"})
    rates, info = mask_phase.pattern_rates(sp, modules, dict.fromkeys(modules, 0.5))
    masks, _ = mask_phase.select_masks(sp, modules, rates, ScoreContext())
    apply_masks(modules, masks)
    report = deployable_report({n: m.weight for n, m in modules.items()}, 2, 4)
    assert report["violating"] == []
    assert report["misfit"] == info["dense_layers"]
    assert len(report["deployable"]) == len(modules) - len(info["dense_layers"]) > 0
    # the misfits are exactly the 1-channel stem and the depthwise convs
    assert all(modules[n].weight.shape[1] % 4 for n in report["misfit"])


def test_a_two_four_linear_weight_passes_the_semi_structured_constraints():
    torch.manual_seed(0)
    w = torch.randn(64, 128)
    w24 = w * nm_keep_mask(w.abs(), 2, 4)
    assert semi_structured_rejection(w24, "cusparselt", dtype=torch.float16) is None
    assert semi_structured_rejection(w24.half()) is None
    assert semi_structured_rejection(w24.bfloat16(), "cutlass") is None
    # refusals, with torch's reasons
    assert semi_structured_rejection(w24) == (
        "dtype torch.float32 is not supported by cusparselt (supported: torch.float8_e4m3fn, torch.int8, "
        "torch.float16, torch.bfloat16)"
    )
    assert semi_structured_rejection(w.half()) == "not 2:4 along its rows: the conversion would drop non-zeros"
    assert semi_structured_rejection(w24[:, :120].contiguous().half()) == (
        "shape (64, 120): both dimensions must be >= and a multiple of (16, 16)"
    )
    assert semi_structured_rejection(w24.half().T) == "not contiguous"
    assert semi_structured_rejection(w24.half().reshape(64, 2, 64)) == "3-d tensor: only 2-d tensors are supported"
    # float32 on CUTLASS is 1:2 pairs: a 2:4 row with both survivors in one pair is refused
    w12 = torch.tensor([[1.0, 1.0, 0.0, 0.0] * 8] * 32)
    assert semi_structured_rejection(w12, "cutlass") == "not 1:2 along its rows: the conversion would drop non-zeros"


def test_the_semi_structured_mirror_holds_torchs_own_tables():
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    for backend, cls in (
        ("cusparselt", SparseSemiStructuredTensorCUSPARSELT),
        ("cutlass", SparseSemiStructuredTensorCUTLASS),
    ):
        table = {d: (c.sparse_min_rows, c.sparse_min_cols) for d, c in cls._DTYPE_SHAPE_CONSTRAINTS.items()}
        assert table == SEMI_STRUCTURED_MIN_SHAPE[backend]
