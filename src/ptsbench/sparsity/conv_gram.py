"""X_l X_r^T of a stride-1, zero-padded Conv2d's im2col inputs without building the im2col matrix.

The Gram of a conv's GEMM input (sparsity/gemm.py) pairs input features (c, i) and (c', j), i and j
kernel positions: H[(c,i),(c',j)] = sum over samples and output positions p of x[c, p+i] x'[c', p+j]
(padded coordinates). With q = p + i and the lag d = j - i this is sum over q in Q_i of
x[c, q] x'[c', q+d], where Q_i is the output grid shifted by i. So every block with the same lag is
the same correlation, summed over slightly different windows: compute it once over the whole image
(one GEMM per lag, (2kH-1)(2kW-1) lags instead of (kH kW)^2 blocks), then subtract what falls
outside Q_i, which is only a few border rows and columns of the image (the zero padding
contributes nothing):

    S(Q_i) = S(image) - sum over excluded rows - sum over excluded columns + excluded corner cells

(inclusion-exclusion; the row, column and cell sums are small GEMMs shared by all i of one lag).
For H itself (x' = x) the lag -d block is the lag d block transposed, so only the lags
lexicographically >= 0 are computed: a 3x3 conv costs 13 GEMMs of C x C instead of one of 9C x 9C
(6.2x fewer flops). The input is stored once, channels-last with zero gaps between rows and
samples, so each lag's shifted operand is a view, not a copy (no 9x im2col). Exact up to float
summation order; ``applies`` says which convs and batches it takes (the rest keep the im2col path
of sparsity/gemm.py).
"""

from __future__ import annotations

from typing import TypeGuard

import torch
from torch import nn

# below this many sample-positions per call the per-block bookkeeping (a few small GEMMs and C x C
# additions per block) costs more than the flops it saves: 512 channels at 7x7 is 0.6x im2col at
# 4 images, 2.1x at 64 (scripts/bench_sparsegpt.py measures the ratio per shape)
MIN_POSITIONS = 2048
DOT_ROWS = 4096  # rows per piece of a depthwise dot product: the product stays in cache
SLICE_BUDGET = 2**23  # input elements per slice of samples (32 MB fp32); a few copies of it live at once


def applies(module: nn.Module, x: torch.Tensor) -> TypeGuard[nn.Conv2d]:
    """Stride-1 zero-padded 2-D convs with at least one output position, on a CPU batch of at least
    MIN_POSITIONS sample-positions. On a GPU one im2col GEMM wins: the per-lag Grams measured
    0.07x-0.70x its speed on an H200 (scripts/bench_sparsegpt.py, part 2), so CUDA inputs take im2col."""
    if not (isinstance(module, nn.Conv2d) and x.dim() == 4 and module.padding_mode == "zeros"):
        return False
    if x.device.type != "cpu" or same_padded(module):
        return False
    if tuple(module.stride) != (1, 1) or x.shape[0] * x.shape[2] * x.shape[3] < MIN_POSITIONS:
        return False
    return all(n > 0 for n in out_size(module, x.shape[-2:]))


def same_padded(module: nn.Module) -> bool:
    """timm's ``Conv2dSame``: TensorFlow 'same' padding, computed from the input size inside ``forward``
    (its ``padding`` attribute is 0), as in the TF-ported EfficientNet-Lite weights' strided convs."""
    return any(c.__name__ == "Conv2dSame" for c in type(module).__mro__)


def conv_pad(module: nn.Conv2d, hw) -> tuple[int, ...]:
    """The (left, right, top, bottom) padding the kernel of ``module`` sees on an (H, W) input: the conv's
    own (``padding='same'`` included), or TF 'same' for a ``same_padded`` conv: per axis
    max((ceil(n / s) - 1) s + (k - 1) d + 1 - n, 0), the smaller half before, as TensorFlow and timm pad."""
    if not same_padded(module):
        return tuple(module._reversed_padding_repeated_twice)
    total = [
        max((-(-int(n) // s) - 1) * s + (k - 1) * d + 1 - int(n), 0)
        for n, k, s, d in zip(hw, module.kernel_size, module.stride, module.dilation)
    ]
    (ph, pw) = total
    return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)


def out_size(module: nn.Conv2d, hw) -> tuple[int, int]:
    """Output rows and columns of ``module`` on an (H, W) input (0 where the kernel does not fit)."""
    pads = conv_pad(module, hw)  # (left, right, top, bottom)
    return tuple(
        max(
            0,
            (size + pads[2 - 2 * i] + pads[3 - 2 * i] - module.dilation[i] * (module.kernel_size[i] - 1) - 1)
            // module.stride[i]
            + 1,
        )
        for i, size in enumerate(hw)
    )


def _excluded(size: int, pad_before: int, out: int, k: int, dil: int) -> tuple[list[int], list[list[int]]]:
    """Image rows (or columns) that some kernel position's window leaves out, and per kernel
    position a 0/1 row over them: 1 where that window leaves the row out."""
    windows = [(a * dil - pad_before, a * dil - pad_before + out) for a in range(k)]
    border = [r for r in range(size) if any(not lo <= r < hi for lo, hi in windows)]
    return border, [[0 if lo <= r < hi else 1 for r in border] for lo, hi in windows]


def lag_gram(module: nn.Conv2d, x_left: torch.Tensor, x_right: torch.Tensor | None = None) -> torch.Tensor:
    """sum over the batch of X_l X_r^T, (G, cols, cols) in the (channel, kh, kw) feature order of
    ``gemm_weight``; ``x_right=None`` means X_r = X_l (the symmetric Hessian)."""
    step = max(1, SLICE_BUDGET // x_left[0].numel())
    out: torch.Tensor | None = None
    for s in range(0, x_left.shape[0], step):
        part = _lag_gram(module, x_left[s : s + step], None if x_right is None else x_right[s : s + step])
        out = part if out is None else out.add_(part)
    assert out is not None  # a batch has at least one sample
    return out


def _correlate(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """sum over m of left[m, g, :] (x) right[m, g, :] for (M, G, Cg) views -> (G, Cg, Cg)."""
    if left.shape[1] == 1:  # an ordinary conv: one (Cg x M) (M x Cg) GEMM on the views, no copy
        return (left[:, 0].T @ right[:, 0]).unsqueeze(0)
    if left.shape[2] == 1:  # depthwise: a dot product per channel, in cache-sized pieces (6x faster)
        out = left.new_zeros(left.shape[1:])
        for s in range(0, left.shape[0], DOT_ROWS):
            out += (left[s : s + DOT_ROWS] * right[s : s + DOT_ROWS]).sum(0)
        return out.unsqueeze(-1)
    return torch.einsum("mgx,mgy->gxy", left, right)


def _lag_gram(module: nn.Conv2d, xl: torch.Tensor, xr: torch.Tensor | None) -> torch.Tensor:
    """The lag-by-lag Gram of ``lag_gram`` (``xr`` None: the symmetric X X^T).

    One function because: the lag loop reads the same framed buffers, border tables and offsets
    (nine values) in every iteration, and its three border corrections are one formula in three
    parts; split, those would travel as arguments and the formula would be read across functions."""
    symmetric = xr is None
    n, c, hgt, wid = xl.shape
    g = module.groups
    cg = c // g
    (kh, kw), (dh, dw) = module.kernel_size, module.dilation
    left_pad, _, top_pad, _ = module._reversed_padding_repeated_twice
    ho, wo = out_size(module, (hgt, wid))
    rows, ex_r = _excluded(hgt, top_pad, ho, kh, dh)
    cols, ex_c = _excluded(wid, left_pad, wo, kw, dw)
    ex_rt = torch.tensor(ex_r, dtype=xl.dtype, device=xl.device).reshape(kh, len(rows))
    ex_ct = torch.tensor(ex_c, dtype=xl.dtype, device=xl.device).reshape(kw, len(cols))
    mh, mw = (kh - 1) * dh, (kw - 1) * dw
    hp, wp = hgt + mh, wid + mw
    line = n * wp  # one image row of every sample
    lead = mh * line + mw
    size = hp * line

    # Frames laid out (row, sample, column, channel) with mh zero rows below the image and mw zero
    # columns after each row, flattened: a shift by (dr, dc) is then the constant offset
    # dr * line + dc (the gaps are shared by neighbouring rows and samples), so every lag's shifted
    # operand is a view, and one image row of all samples is a contiguous slab.
    def frames(x):
        buf = x.new_zeros(lead + size + lead, c)
        buf[lead : lead + size].view(hp, n, wp, c)[:hgt, :, :wid].copy_(x.permute(2, 0, 3, 1))
        return buf.view(-1, g, cg)

    left = frames(xl)
    right = left if symmetric else frames(xr)
    body = hgt * line  # the gap rows below the last image row hold no left-operand entry
    image = left[lead : lead + body]
    grid = left[lead : lead + size].view(hp, n, wp, g, cg)
    kk = kh * kw
    out = xl.new_zeros(kk, kk, g, cg, cg)  # block-major: each (i, j) block written contiguously
    for da in range(-(kh - 1), kh):
        for db in range(-(kw - 1), kw):
            if symmetric and (da, db) < (0, 0):
                continue
            off = lead + da * dh * line + db * dw
            total = _correlate(image, right[off : off + body])  # (g, cg, cg)
            sgrid = right[off : off + size].view(hp, n, wp, g, cg)
            # kernel rows a / columns b that have a partner at this lag, and what their windows leave
            # out: border rows, columns, and the corner cells subtracted twice
            a1 = range(max(0, -da), min(kh, kh - da))
            b1 = range(max(0, -db), min(kw, kw - db))
            fix_r = [a for a in a1 if any(ex_r[a])]
            fix_c = [b for b in b1 if any(ex_c[b])]
            if fix_r:
                per_row = torch.stack([_correlate(grid[r].flatten(0, 1), sgrid[r].flatten(0, 1)) for r in rows])
                row_fix = dict(zip(fix_r, torch.einsum("ar,rgxy->agxy", ex_rt[fix_r], per_row), strict=True))
            if fix_c:
                per_col = torch.stack(
                    [_correlate(grid[:hgt, :, s].flatten(0, 1), sgrid[:hgt, :, s].flatten(0, 1)) for s in cols]
                )
                col_fix = dict(zip(fix_c, torch.einsum("bs,sgxy->bgxy", ex_ct[fix_c], per_col), strict=True))
            if fix_r and fix_c:
                per_cell = torch.stack(
                    [torch.stack([_correlate(grid[r, :, s], sgrid[r, :, s]) for s in cols]) for r in rows]
                )
                by_row = torch.einsum("ar,rsgxy->asgxy", ex_rt[fix_r], per_cell)
                cells = torch.einsum("bs,asgxy->abgxy", ex_ct[fix_c], by_row)
            for a in a1:
                for b in b1:
                    block = total
                    if a in fix_r:
                        block = block - row_fix[a]
                    if b in fix_c:
                        block = block - col_fix[b]
                    if a in fix_r and b in fix_c:
                        block = block + cells[fix_r.index(a), fix_c.index(b)]
                    out[a * kw + b, (a + da) * kw + b + db] = block
    if symmetric:  # computed: the blocks with j >= i (lag >= 0); the rest are their transposes
        lower = out.transpose(0, 1).transpose(-1, -2).clone()
        k = torch.arange(kk)
        lower[k, k] = 0  # the diagonal blocks are already in ``out``
        out += lower
    return out.permute(2, 3, 0, 4, 1).reshape(g, cg * kk, cg * kk)  # (g, c, i, c', j): gemm_weight's order
