"""What a sparse tensor core can run: the hardware N:M rule and the constraints of PyTorch's 2:4 conversion.

N:M (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks"; NVIDIA ASP). Sparse tensor
cores multiply a weight whose every group of M consecutive entries along the reduction (input)
axis holds at most N non-zeros. A conv runs as an implicit GEMM whose reduction axis walks the
input channels of one kernel position, then the next position (NHWC / (kh, kw, c) order), so the
rule for a conv weight (O, C/g, kH, kW) is: view it as (O, kH, kW, C/g), and every M consecutive
input channels at each (o, kh, kw) hold at most N non-zeros. A Linear (O, in): every M
consecutive in_features. A layer whose input channels per group are not a multiple of M cannot
hold whole groups and stays dense (selection.nm_fits).

Grouped and depthwise convs: the rule is per group, along that group's C/g input channels. A
grouped conv with C/g a multiple of M is deployable in that sense (each group is its own GEMM);
a depthwise conv (C/g = 1) has no channel axis to group and is never N:M-deployable, whatever
its kernel size: it stays dense.

``torch.sparse.to_sparse_semi_structured`` (the 2:4 path of PyTorch) accepts a 2-D contiguous
CUDA tensor of a dtype its backend lists, with both dimensions at least and a multiple of that
dtype's minimum block; it does not check the pattern, so a weight that is not 2:4 along its rows
(1:2 pairs for float32 on CUTLASS) is silently changed by the conversion. ``semi_structured_rejection``
mirrors those checks (plus the pattern) without a GPU, from torch 2.14's source.
"""

from __future__ import annotations

import torch

from .selection import nm_fits, nm_layout

# (min rows, min cols) of the sparse operand per dtype, torch/sparse/semi_structured.py
SEMI_STRUCTURED_MIN_SHAPE: dict[str, dict[torch.dtype, tuple[int, int]]] = {
    "cusparselt": {
        torch.float8_e4m3fn: (32, 32),
        torch.int8: (32, 32),
        torch.float16: (16, 16),
        torch.bfloat16: (16, 16),
    },
    "cutlass": {
        torch.int8: (16, 128),
        torch.float16: (32, 64),
        torch.bfloat16: (32, 64),
        torch.float32: (32, 32),
    },
}


def nm_group_counts(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Non-zeros in each group of M of the hardware layout (a fitting weight), flat."""
    return (nm_layout(weight) != 0).reshape(-1, m).sum(-1)


def is_deployable_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether ``weight`` (Linear (O, in) or conv (O, C/g, kH, kW)) is N:M in the layout sparse
    tensor cores accept: its input channels per group are a multiple of M, and every M
    consecutive input channels at each kernel position (a Linear: every M consecutive
    in_features) hold at most N non-zeros. A depthwise conv (C/g = 1) never is."""
    if not nm_fits(weight.shape, m):
        return False
    return bool((nm_group_counts(weight.detach(), m) <= n).all())


def deployable_report(weights: dict[str, torch.Tensor], n: int, m: int) -> dict[str, list[str]]:
    """Layers by name: ``deployable`` (N:M in the hardware layout), ``misfit`` (channels per group
    not a multiple of M: dense by rule), ``violating`` (fit, but some group keeps more than N)."""
    out: dict[str, list[str]] = {"deployable": [], "misfit": [], "violating": []}
    for name, w in weights.items():
        key = "misfit" if not nm_fits(w.shape, m) else "deployable" if is_deployable_nm(w, n, m) else "violating"
        out[key].append(name)
    return out


def semi_structured_rejection(
    weight: torch.Tensor, backend: str = "cusparselt", dtype: torch.dtype | None = None
) -> str | None:
    """Why ``to_sparse_semi_structured`` on ``backend`` would refuse ``weight`` (or change it), or
    None when it would accept it unchanged. ``dtype``: check the weight as it would be converted
    after a cast (a float32 model deployed in float16); the device is not checked (CUDA only).
    Checks, in torch's order: 2-D, contiguous, dtype of the backend, both dimensions >= and a
    multiple of the dtype's minimum; then the pattern: 2:4 along each row (1:2 for float32)."""
    if backend not in SEMI_STRUCTURED_MIN_SHAPE:
        raise ValueError(f"backend={backend!r}; valid choices: {', '.join(SEMI_STRUCTURED_MIN_SHAPE)}")
    if weight.dim() != 2:
        return f"{weight.dim()}-d tensor: only 2-d tensors are supported"
    if not weight.is_contiguous():
        return "not contiguous"
    dtype = dtype or weight.dtype
    table = SEMI_STRUCTURED_MIN_SHAPE[backend]
    if dtype not in table:
        return f"dtype {dtype} is not supported by {backend} (supported: {', '.join(str(d) for d in table)})"
    rows, cols = weight.shape
    min_rows, min_cols = table[dtype]
    if rows < min_rows or rows % min_rows or cols < min_cols or cols % min_cols:
        return f"shape {tuple(weight.shape)}: both dimensions must be >= and a multiple of ({min_rows}, {min_cols})"
    n, m = (1, 2) if dtype == torch.float32 else (2, 4)
    if bool(((weight.detach() != 0).reshape(rows, -1, m).sum(-1) > n).any()):
        return f"not {n}:{m} along its rows: the conversion would drop non-zeros"
    return None


def semi_structured_accepts(
    weight: torch.Tensor, backend: str = "cusparselt", dtype: torch.dtype | None = None
) -> bool:
    """Whether ``to_sparse_semi_structured`` would accept ``weight`` unchanged (semi_structured_rejection)."""
    return semi_structured_rejection(weight, backend, dtype) is None
