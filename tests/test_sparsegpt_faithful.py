"""SparseGPT as its reference does it: weights on inputs that are never active are zeroed and count
as pruned (checked against an independent column-by-column OBS computation), and no damping is refused."""

from __future__ import annotations

import pytest
import torch

from ptsbench.config.spec import resolve
from ptsbench.errors import ConfigError
from ptsbench.reconstruction.obs import output_error, sparsegpt_prune


def _reference_with_dead_inputs(w, h, k, blocksize, percdamp):
    """The reference's order: H_jj = 1 and W[:, j] = 0 for dead j, damping on the mean diagonal, then
    explicit inverses of H over the not-yet-processed columns, column by column (float64). Each block
    prunes its share of the live budget k - (dead weights), split by live columns, among live weights."""
    w, h = w.double().clone(), h.double().clone()
    rows, c = w.shape
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += percdamp * h.diagonal().mean() * torch.eye(c, dtype=h.dtype)
    live_cum = [0, *torch.cumsum((~dead).long(), 0).tolist()]
    k_live = k - rows * int(dead.sum())
    prune = dead.unsqueeze(0).expand(rows, c).clone()
    for i1 in range(0, c, blocksize):
        i2 = min(i1 + blocksize, c)
        k_b = (k_live * live_cum[i2]) // live_cum[-1] - (k_live * live_cum[i1]) // live_cum[-1]
        diag = [torch.linalg.inv(h[j:, j:])[0, 0].item() for j in range(i1, i2)]
        cands = [
            (w[r, j].item() ** 2 / diag[j - i1], r * (i2 - i1) + j - i1, r, j)
            for r in range(rows)
            for j in range(i1, i2)
        ]
        for _, _, r, j in sorted(t for t in cands if not dead[t[3]])[:k_b]:
            prune[r, j] = True
        for j in range(i1, i2):
            hinv = torch.linalg.inv(h[j:, j:])
            for r in range(rows):
                if prune[r, j]:
                    w[r, j:] -= w[r, j] / hinv[0, 0] * hinv[0, :]
                    w[r, j] = 0.0
    return w, ~prune


def _layer_with_dead_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 14, generator=g) * 3  # large weights on the dead inputs would win a magnitude contest
    x = torch.randn(120, 14, generator=g) @ torch.randn(14, 14, generator=g) * 0.1
    x[:, [2, 7, 8]] = 0.0  # never active: H_jj = 0
    return w, x


def test_dead_inputs_are_zeroed_and_the_rest_equals_an_independent_reference():
    w, x = _layer_with_dead_inputs(0)
    h = x.T @ x
    k = 40  # 18 dead weights + 22 chosen among the live ones
    new, keep, _ = sparsegpt_prune(w[None], h[None], k, blocksize=5, percdamp=0.01)
    ref_w, ref_keep = _reference_with_dead_inputs(w, h, k, 5, 0.01)
    assert torch.equal(keep[0], ref_keep)
    assert int((~keep).sum()) == k and bool((new[0][:, [2, 7, 8]] == 0).all())
    torch.testing.assert_close(new[0].double(), ref_w, atol=1e-5, rtol=0)


def test_dead_inputs_cost_no_output_error_and_free_their_budget():
    w, x = _layer_with_dead_inputs(1)
    h = (x.T @ x)[None]
    live = [j for j in range(14) if j not in (2, 7, 8)]
    new, keep, _ = sparsegpt_prune(w[None], h, 40, blocksize=16, percdamp=0.01)
    # the same layer without the dead columns, pruned at the live budget 40 - 18: the same weights
    sub, sub_keep, _ = sparsegpt_prune(w[None][:, :, live], h[:, live][:, :, live], 22, blocksize=16, percdamp=0.01)
    assert torch.equal(keep[0][:, live], sub_keep[0])
    err = output_error(w[None] - new, h, len(x))
    # equal up to the damping, whose mean diagonal also counts the dead columns' H_jj = 1 (as the reference)
    assert err == pytest.approx(output_error(w[None][:, :, live] - sub, h[:, live][:, :, live], len(x)), rel=1e-3)


def test_dead_inputs_under_row_groups_keep_every_row_equal():
    w, x = _layer_with_dead_inputs(2)
    new, keep, _ = sparsegpt_prune(w[None], (x.T @ x)[None], 45, blocksize=4, group="row")
    per_row = (~keep[0]).sum(1)
    assert int(per_row.sum()) == 45 and int(per_row.max() - per_row.min()) <= 1
    assert bool((~keep[0][:, [2, 7, 8]]).all())


def test_more_dead_weights_than_the_count_are_all_zeroed():
    w, x = _layer_with_dead_inputs(3)
    new, keep, _ = sparsegpt_prune(w[None], (x.T @ x)[None], 10, blocksize=8)
    assert int((~keep).sum()) == 18 and torch.equal(new[0][:, [0, 1]], w[:, [0, 1]].to(new.dtype))


@pytest.mark.parametrize("value", ["0", "0.0", "-0.01"])
def test_no_damping_is_refused(make_cfg, value):
    with pytest.raises(ConfigError, match=rf"reconstruction.percdamp={value}.* > 0"):
        resolve(make_cfg("reconstruction=sparsegpt", f"reconstruction.percdamp={value}"))
