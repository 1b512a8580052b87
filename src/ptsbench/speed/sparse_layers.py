"""Drop-in sparse versions of the layers sparse kernels can run, one per backend.

Which layers: a Linear (y = x W^T + b over the last axis) and a 1x1 conv without padding or
groups, which is the same GEMM over every output pixel (a stride s reads every s-th pixel).
Larger kernels would need an im2col copy per call, which costs more than dense cuDNN / oneDNN
saves, so they stay dense.

Backends:
- ``csr`` (any pattern): the weight as a ``torch.sparse_csr`` matrix, y^T = W_csr x^T, a sparse x
  dense product (MKL on x86 CPUs, cuSPARSE on CUDA); pays only at high sparsity and some shapes,
  so the latency planner benchmarks it per layer shape.
- ``semi_structured`` (CUDA, 2:4): ``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt, or
  CUTLASS), half precision; the weight must pass deployable.semi_structured_rejection.
A swapped layer computes the same function as the dense one up to float rounding.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..sparsity.deployable import semi_structured_rejection
from ..sparsity.layers import PrunableLayer

BACKENDS = ("dense", "csr", "semi_structured")


def is_pointwise(module: nn.Module) -> bool:
    """A 1x1 conv that is a plain GEMM per output pixel: no padding, one group, no dilation effect."""
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.groups == 1
        and module.padding in ((0, 0), "valid")
    )


def gemm_capable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_pointwise(module)


def _weight_2d(module: PrunableLayer) -> torch.Tensor:
    return module.weight.detach().reshape(module.weight.shape[0], -1)


def _pixels_as_rows(module: nn.Conv2d | SemiStructuredGemm, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    sh, sw = module.stride
    if (sh, sw) != (1, 1):
        x = x[..., ::sh, ::sw]
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(-1, c), (n, h, w)


def _rows_as_pixels(y: torch.Tensor, nhw: tuple[int, ...]) -> torch.Tensor:
    n, h, w = nhw
    return y.reshape(n, h, w, -1).permute(0, 3, 1, 2)


class CSRGemm(nn.Module):
    """A Linear or 1x1 conv whose weight is a CSR matrix."""

    def __init__(self, module: PrunableLayer):
        super().__init__()
        self.pointwise = isinstance(module, nn.Conv2d)
        self.stride: tuple[int, ...] = module.stride if isinstance(module, nn.Conv2d) else (1, 1)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and the outputs are tested
            warnings.simplefilter("ignore", UserWarning)
            self.weight_csr = _weight_2d(module).to_sparse_csr()
        self.bias = None if module.bias is None else module.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # W_csr @ X, the sparse operand first: the product CSR kernels implement, with X's columns the
        # pixels (a 1x1 conv: channels x pixels, one copy of x) or the tokens (a Linear)
        if self.pointwise:
            sh, sw = self.stride
            x = x[..., ::sh, ::sw] if (sh, sw) != (1, 1) else x
            n, c, h, w = x.shape
            out = torch.sparse.mm(self.weight_csr, x.transpose(0, 1).reshape(c, -1))
            out = out if self.bias is None else out + self.bias[:, None]
            return out.reshape(-1, n, h, w).transpose(0, 1)
        shape = x.shape
        out = torch.sparse.mm(self.weight_csr, x.reshape(-1, shape[-1]).T.contiguous()).T
        out = out if self.bias is None else out + self.bias
        return out.reshape(*shape[:-1], -1)


class SemiStructuredGemm(nn.Module):
    """A Linear or 1x1 conv whose weight is a 2:4 semi-structured tensor (CUDA, half precision)."""

    def __init__(self, module: PrunableLayer, dtype: torch.dtype = torch.float16):
        super().__init__()
        from torch.sparse import to_sparse_semi_structured

        w = _weight_2d(module).to(dtype).contiguous()
        reason = semi_structured_rejection(w)
        if reason is not None:
            raise ValueError(f"semi-structured conversion refused: {reason}")
        self.pointwise = isinstance(module, nn.Conv2d)
        self.stride: tuple[int, ...] = module.stride if isinstance(module, nn.Conv2d) else (1, 1)
        self.weight_ss = to_sparse_semi_structured(w)
        self.bias = None if module.bias is None else module.bias.detach().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pointwise:
            rows, nhw = _pixels_as_rows(self, x)
            return _rows_as_pixels(F.linear(rows, self.weight_ss, self.bias), nhw)
        return F.linear(x, self.weight_ss, self.bias)


def candidates(
    module: PrunableLayer, device: torch.device, nm: tuple[int, int] | None, dtype: torch.dtype
) -> list[str]:
    """The backends worth timing for ``module`` on ``device`` (``nm``: the run's N:M pattern): dense
    always; CSR for a Linear / 1x1 conv (MKL on CPU, cuSPARSE on CUDA); 2:4 tensor cores on CUDA
    when the weight, cast to ``dtype``, passes the semi-structured constraints."""
    if not gemm_capable(module):
        return ["dense"]
    out = ["dense", "csr"]
    if device.type == "cuda" and nm == (2, 4) and semi_structured_rejection(_weight_2d(module).to(dtype)) is None:
        out.append("semi_structured")
    return out


def make_sparse(module: PrunableLayer, backend: str) -> nn.Module:
    """``module`` itself for ``dense``, else its sparse version on ``backend``."""
    if backend == "dense":
        return module
    if backend == "csr":
        return CSRGemm(module)
    if backend == "semi_structured":
        return SemiStructuredGemm(module, module.weight.dtype)
    raise ValueError(f"backend={backend!r}; valid choices: {', '.join(BACKENDS)}")
