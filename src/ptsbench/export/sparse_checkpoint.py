"""Sparse checkpoints: a pruned model in safetensors as a bitmask + its packed non-zeros per layer.

The layout is the ``sparse-bitmask`` format of Neural Magic's ``compressed-tensors`` (used by
llm-compressor and vLLM): a weight W viewed as 2-D (rows = output channels, columns = the rest,
flattened; a conv (O, C/g, kH, kW) becomes (O, C/g*kH*kW)) is stored as four tensors
    <name>.shape        int64, the dense shape
    <name>.compressed   its non-zeros in row-major order (W's dtype)
    <name>.bitmask      uint8 (rows, ceil(cols / 8)): bit j % 8 of byte j // 8 (little-endian) = W_ij != 0
    <name>.row_offsets  int64 (rows,): where row i's values start in ``compressed``
A weight is stored that way only when it is smaller so (about below 97% density for fp32); every
other tensor of the state dict is stored as it is. The file's metadata carries ``format``, the
compressed names and whatever the caller adds (the run's config, to rebuild the model).

Why not the package itself: compressed-tensors 0.20 keeps ``sparse-bitmask`` only as a legacy
config name (its compressor is gone), compresses Linear/Embedding weights only, and pulls in
transformers, pydantic, loguru and psutil with Python >= 3.11; the layout is 40 lines here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

FORMAT = "sparse-bitmask"
PARTS = ("shape", "compressed", "bitmask", "row_offsets")


def compress_weight(w: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four tensors of ``w`` in the bitmask layout (keys: PARTS)."""
    rows = w.detach().cpu().reshape(w.shape[0], -1)
    nonzero = rows != 0
    counts = nonzero.sum(1)
    packed = np.packbits(nonzero.numpy(), axis=-1, bitorder="little")
    return {
        "shape": torch.tensor(list(w.shape), dtype=torch.int64),
        "compressed": rows[nonzero].contiguous(),
        "bitmask": torch.from_numpy(packed),
        "row_offsets": (counts.cumsum(0) - counts).to(torch.int64),
    }


def decompress_weight(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The dense weight back from its four tensors (exactly: the non-zeros go back where they were)."""
    shape = [int(d) for d in parts["shape"]]
    cols = int(np.prod(shape[1:], dtype=np.int64))
    bits = np.unpackbits(parts["bitmask"].numpy(), axis=-1, count=cols, bitorder="little").astype(bool)
    mask = torch.from_numpy(bits)
    rows = torch.zeros(mask.shape, dtype=parts["compressed"].dtype)
    rows[mask] = parts["compressed"]
    return rows.reshape(shape)


def payload_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def compress_state_dict(state: dict[str, torch.Tensor], sparse: list[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` with each weight named in ``sparse`` in the bitmask layout where that is smaller;
    returns the tensors and the names actually compressed."""
    out, done = {}, []
    for key, t in state.items():
        t = t.detach().cpu()
        if key in sparse and t.dim() >= 2 and t.is_floating_point():
            parts = compress_weight(t)
            if payload_bytes(parts) < payload_bytes({key: t}):
                out.update({f"{key}.{p}": v for p, v in parts.items()})
                done.append(key)
                continue
        out[key] = t.contiguous()
    return out, done


def size_bytes(state: dict[str, torch.Tensor], sparse: list[str]) -> dict[str, int]:
    """Tensor payload of the model as a plain state dict (``dense``, its dtypes) and as a sparse
    checkpoint (``compressed``); file headers left out."""
    compressed, _ = compress_state_dict(state, sparse)
    return {"dense": payload_bytes(state), "compressed": payload_bytes(compressed)}


def save_sparse(path: str | Path, state: dict[str, torch.Tensor], sparse: list[str], meta: dict | None = None) -> Path:
    """Write ``state`` as a sparse checkpoint; ``meta`` (JSON-able) goes into the file's metadata."""
    from safetensors.torch import save_file

    tensors, done = compress_state_dict(state, sparse)
    header = {"format": FORMAT, "compressed": json.dumps(done)}
    header.update({k: json.dumps(v, default=str) for k, v in (meta or {}).items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=header)
    tmp.replace(path)
    return path


def load_sparse(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The dense state dict and the metadata (JSON values decoded) of a sparse checkpoint."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} checkpoint (format={header.get('format')!r})")
    meta = {k: json.loads(v) for k, v in header.items() if k != "format"}
    state = {}
    for key in meta["compressed"]:
        state[key] = decompress_weight({p: tensors.pop(f"{key}.{p}") for p in PARTS})
    state.update(tensors)
    return state, meta
