"""SparseGPT's column-blocked OBS mask selection and weight update for one GEMM (Frantar &
Alistarh, ICML 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
Alg. 1; the OBS update of Hassibi & Stork 1993 / OBC, Frantar et al. 2022).

For a layer computing W X (rows of W are outputs, columns are input features) and H = X X^T:
columns are processed left to right; when column j is pruned, the not-yet-processed columns of
the same row absorb the error optimally for the remaining features F_j = {j, j+1, ...}:
    w_F <- w_F - (w_j / [H_F^-1]_jj) [H_F^-1]_j,:
All the [H_F^-1] rows come from one upper Cholesky factor U of H^-1 (fp32, as the reference) (row j of U is row j of
H_{F_j}^-1 divided by its sqrt diagonal). Masks are chosen per block of ``blocksize`` columns on
the weights updated so far, by the OBS saliency w^2 / U_jj^2 (= w^2 / [H_F^-1]_jj); N:M groups
are chosen when the block reaches them. Once a block's (or N:M group's) mask is fixed, its
column-by-column updates are a triangular system per row, solved 16 columns at a time
(_walk_block) instead of a Python loop over columns: same arithmetic, far fewer kernel launches.

Exact counts (unlike the reference, which thresholds each block at the same quantile): the layer's
count k is spread over groups and column blocks by cumulative rounding (selection.spread), and
each block prunes exactly its share, its k_b lowest saliencies (per row under group=row); so the
layer loses exactly k weights, each block floor or ceil of its proportional share.

Inputs that are never active (H_jj = 0) carry no signal: as in the reference, their weights are
zeroed before pruning and count as pruned, so the rest of the count k - (dead weights) is spread
over the live columns only (no live weight is lost to make room for a useless one). Should the dead
weights exceed k, they are all zeroed anyway and the layer loses more than k. Under N:M they are
zeroed and, having saliency 0, are the first picked in their groups of M.
"""

from __future__ import annotations

import torch

from ..sparsity.selection import prune_lowest, spread


def inverse_cholesky(h: torch.Tensor, percdamp: float, dtype=torch.float32) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor U of (H + damp I)^-1 (U^T U = H^-1), damp = percdamp x mean diagonal,
    per group (G, C, C). Inputs never seen (zero diagonal) get H_jj = 1 so H is invertible; if H is
    still not positive definite the damping grows tenfold (up to 5 times). Returns U and the damping.

    One Cholesky and one triangular inverse instead of the reference's Cholesky, inverse and second
    Cholesky: with J the index reversal and J H J = L L^T, U = J L^-1 J is upper triangular and
    U^T U = J L^-T L^-1 J = J (J H J)^-1 J = H^-1."""
    h = h.to(dtype).clone()
    diag = h.diagonal(dim1=-2, dim2=-1)
    diag[diag == 0] = 1.0
    mean = diag.mean(dim=-1, keepdim=True)
    flipped = h.flip(-1, -2)
    eye = torch.eye(h.shape[-1], dtype=dtype, device=h.device).expand_as(h)
    pd = percdamp
    for _ in range(6):
        chol, info = torch.linalg.cholesky_ex(flipped + eye * (pd * mean).unsqueeze(-1))
        if not bool(info.any()):
            inv = torch.linalg.solve_triangular(chol, eye, upper=False)
            return inv.flip(-1, -2), pd
        pd = max(pd * 10, 1e-6)
    raise RuntimeError(f"SparseGPT: Hessian not positive definite even with damping {pd / 10:g} x mean diagonal")


@torch.no_grad()
def sparsegpt_prune(
    w: torch.Tensor,
    h: torch.Tensor,
    k: int = 0,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    group: str = "layer",
    nm: tuple[int, int] | None = None,
    order: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Prune ``w`` (G, R, C) given H (G, C, C): exactly ``k`` weights in total (unstructured) or the
    M-N lowest-saliency weights of every M consecutive columns (``nm=(N, M)``). Returns the updated
    weights (pruned entries exactly 0), the keep-mask and the damping used. ``order``: a permutation
    of the columns to walk them in (N:M groups are M consecutive columns of that order; a conv's
    channel groups: selection.nm_column_order); results come back in the original column order."""
    if order is not None:  # permuting W's columns and H's rows and columns alike is the same problem
        inverse = torch.argsort(order)
        new, keep, damp = sparsegpt_prune(
            w[:, :, order], h[:, order][:, :, order], k, blocksize=blocksize, percdamp=percdamp, group=group, nm=nm
        )
        return new[:, :, inverse], keep[:, :, inverse], damp
    g, r, c = w.shape
    dead = h.diagonal(dim1=-2, dim2=-1) == 0  # (G, C): inputs the calibration data never activates
    u, damp = inverse_cholesky(h, percdamp, torch.float64 if w.dtype == torch.float64 else torch.float32)
    w = w.to(u.dtype).clone().masked_fill_(dead.unsqueeze(1), 0.0)
    prune = torch.zeros_like(w, dtype=torch.bool)
    widths = [min(blocksize, c - i) for i in range(0, c, blocksize)]
    if nm is None:
        prune |= dead.unsqueeze(1)
        per_block = _block_budgets(dead, k, r, widths, blocksize, group)
    for b, i1 in enumerate(range(0, c, blocksize)):
        i2 = i1 + widths[b]
        w1, u1 = w[:, :, i1:i2], u[:, i1:i2, i1:i2]  # _walk_block updates a copy
        d = u1.diagonal(dim1=-2, dim2=-1)  # (G, width)
        if nm is None:
            sal = (w1.pow(2) / d.unsqueeze(1).pow(2)).masked_fill(prune[:, :, i1:i2], float("inf"))
            if group == "row":
                p1 = prune_lowest(sal.reshape(g * r, -1), per_block[:, :, b].reshape(-1)).reshape(w1.shape)
            else:
                p1 = prune_lowest(sal.reshape(g, -1), per_block[:, b]).reshape(w1.shape)
            p1 = p1 | prune[:, :, i1:i2]  # the dead columns, pruned on top of the block's live share
            # the block's mask is fixed up front; its updates are walked SUB_BLOCK columns at a time
            q1, err1, _ = _walk_block(w1, u1, SUB_BLOCK, lambda _w, i, j, p1=p1: p1[:, :, i:j])
        else:  # N:M picks each group's mask on the weights the earlier groups updated

            def pick(w_group, i, j, d=d):
                sal = w_group.pow(2) / d[:, None, i:j].pow(2)
                return prune_lowest(sal.reshape(-1, j - i), nm[1] - nm[0]).reshape(sal.shape)

            q1, err1, p1 = _walk_block(w1, u1, nm[1], pick)
        w[:, :, i1:i2] = q1
        prune[:, :, i1:i2] = p1
        w[:, :, i2:] -= torch.bmm(err1, u[:, i1:i2, i2:])
    return w, ~prune, damp


def _block_budgets(dead: torch.Tensor, k: int, r: int, widths: list[int], blocksize: int, group: str) -> torch.Tensor:
    """How many live weights each column block prunes, (G, B), or per row (G, R, B) under group=row: the
    layer's ``k`` minus its dead weights, spread over groups, rows and blocks by cumulative rounding."""
    g, c = dead.shape
    live = (~dead).cpu()  # integer bookkeeping stays on the host, where ``spread`` builds its parts
    k_live = max(k - int(dead.sum()) * r, 0)
    sizes = (live.sum(-1) * r).tolist()
    per_group = spread(k_live, sizes) if sum(sizes) else torch.zeros(g, dtype=torch.long)  # (G,)
    block_live = torch.stack([live[:, i : i + wd].sum(-1) for i, wd in zip(range(0, c, blocksize), widths)], -1)
    if group == "row":
        return _spread_each(spread(per_group, [1] * r), block_live.unsqueeze(1))  # (G, R, B)
    return _spread_each(per_group, block_live)  # (G, B)


def _spread_each(k: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """``selection.spread`` with sizes of their own per entry: k (...,) split over sizes (..., B) by
    cumulative rounding, each part floor(k C_i / C) - floor(k C_{i-1} / C)."""
    cum = torch.cat([torch.zeros_like(sizes[..., :1]), sizes.cumsum(-1)], -1).long()
    total = cum[..., -1:].clamp_min(1)
    edges = torch.div(k.long().unsqueeze(-1) * cum, total, rounding_mode="floor")
    return edges[..., 1:] - edges[..., :-1]


SUB_BLOCK = 16  # columns per triangular solve of an unstructured block, lazily updated in between
SOLVE_BUDGET = 2**24  # elements of the per-row triangular systems solved at once


def _walk_block(w1: torch.Tensor, u1: torch.Tensor, step: int, pick) -> tuple[torch.Tensor, ...]:
    """The column-by-column OBS updates of one block (G, R, B), ``step`` columns at a time: each
    step's mask is ``pick(w, i, j)`` on the weights the earlier steps updated (N:M chooses there;
    an unstructured block returns its slice of the mask chosen up front), then one triangular solve
    per row (_solve_columns) and one GEMM carry its errors to the rest of the block (per-row systems
    of a whole 128-column block would cost R x 128^2 to build). Returns the block's final weights
    (pruned ones exactly 0), the errors e for the lazy update of the columns after it, and the mask."""
    width = w1.shape[-1]
    w1 = w1.clone()
    final, err = torch.empty_like(w1), torch.empty_like(w1)
    mask = torch.zeros_like(w1, dtype=torch.bool)
    for i in range(0, width, step):
        j = min(i + step, width)
        mask[:, :, i:j] = pick(w1[:, :, i:j], i, j)
        final[:, :, i:j], err[:, :, i:j] = _solve_columns(w1[:, :, i:j], u1[:, i:j, i:j], mask[:, :, i:j])
        w1[:, :, j:] -= torch.bmm(err[:, :, i:j], u1[:, i:j, j:])
    return final, err, mask


def _solve_columns(w1: torch.Tensor, u1: torch.Tensor, p1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column i's error e_i = p_i w_i / U_ii is taken on w_i as updated by the earlier columns,
    w_i = w0_i - sum_{k<i} e_k U_ki. So e solves, per row, the lower-triangular system
    p_i (U^T e)_i + (1 - p_i) e_i = p_i w0_i; kept columns keep w0 - (e U_strict)."""
    g, r, width = w1.shape
    lower = u1.transpose(1, 2)  # (G, B, B)
    pf = p1.to(w1.dtype)
    err = torch.empty_like(w1)
    step = max(1, SOLVE_BUDGET // (width * width * g))
    for s in range(0, r, step):
        p = pf[:, s : s + step]  # (G, r', B)
        system = lower.unsqueeze(1) * p.unsqueeze(-1) + torch.diag_embed(1 - p)
        rhs = (w1[:, s : s + step] * p).unsqueeze(-1)
        err[:, s : s + step] = torch.linalg.solve_triangular(system, rhs, upper=False).squeeze(-1)
    final = w1 - torch.bmm(err, torch.triu(u1, diagonal=1))
    return final.masked_fill(p1, 0.0), err


def output_error(delta: torch.Tensor, h: torch.Tensor, n: int) -> float:
    """||delta X||^2 summed over outputs, averaged over the n input columns: tr(delta H delta^T) / n."""
    d = delta.double()
    return float(torch.einsum("grc,gcd,grd->", d, h.double(), d)) / max(n, 1)
