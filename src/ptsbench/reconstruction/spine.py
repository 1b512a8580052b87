"""The sparse forward walked one block at a time, so a unit's sparse input costs part of one block.

With ``input=sparse`` a unit's input is what its first module receives in the *current* sparse
model (earlier units already reconstructed). Running the sparse prefix for every unit costs
O(units x depth) forwards; a conv inside a residual block, or one after the activation that a
``single`` unit leaves out, cannot take the feeder's previous-unit shortcut.

The spine is the adapter's ``block`` units ``B_0 .. B_{n-1}`` (stem and head chains included). A
link ``j -> j+1`` is kept only when block j's dense output equals block j+1's dense input on probe
samples, so a global pool, a flatten, or any op between blocks that the adapter does not list breaks
the link instead of being skipped silently. Then, for a unit whose first module ``m`` lies in block k:

    X_k   = B_{k-1}(... B_j(X_j))   from the kept sparse input X_j of block j <= k, over kept links
            (else the sparse prefix, once per block);
    X(m)  = what m receives while B_k alone runs on X_k.

Units are served in execution order, so blocks before k are final when X_k is computed, and X_k does
not depend on block k's own weights. The same modules run on the same chunks as in the prefix, so
X(m) is the tensor the prefix gives (tested bit for bit); only its cost changes.
"""

from __future__ import annotations

import torch

from .unit_data import PROBE, CalibTensor, UnitChain, apply_chunked, capture_input, capture_inputs_of, same_activation


class BlockSpine:
    def __init__(self, model, dense_model, blocks, calib_inputs, forward, device, store, kw):
        self.model, self.blocks, self.calib, self.forward = model, blocks, calib_inputs, forward
        self.device, self.store, self.kw = device, store, kw
        self.links = verified_links(dense_model, blocks, calib_inputs[:PROBE], forward, device)
        self.kept: tuple[int, CalibTensor] | None = None  # (block k, its sparse input)
        self.captures = 0

    def block_of(self, module: str) -> int | None:
        """Index of the block whose modules hold ``module``, if any."""
        for k, block in enumerate(self.blocks):
            if any(module == m or module.startswith(m + ".") for m in block.modules):
                return k
        return None

    def keep(self, module: str, x: CalibTensor) -> None:
        """Remember ``x`` when it is the sparse input of a block (``module`` opens that block)."""
        k = self.block_of(module)
        if k is not None and module == self.blocks[k].modules[0]:
            self.kept = (k, x)

    def input_of(self, module: str) -> CalibTensor | None:
        """Sparse input of ``module`` through its block; None when no block holds it."""
        k = self.block_of(module)
        if k is None:
            return None
        start = self._block_input(k)
        if module == self.blocks[k].modules[0]:
            return start
        x = self._capture_within(k, module, start)
        if x is not None:
            self.captures += 1
        return x

    def _block_input(self, k: int) -> CalibTensor:
        if self.kept is not None:
            j, x = self.kept
            if j <= k and all(self.links[j:k]):
                for i in range(j, k):
                    x = apply_chunked(
                        UnitChain(self.model, self.blocks[i].modules), x, self.store, self.device, **self.kw
                    )
                self.kept = (k, x)
                return x
        x = capture_input(
            self.model, self.blocks[k].modules[0], self.calib, self.forward, self.device, self.store, **self.kw
        )
        self.kept = (k, x)
        return x

    def _capture_within(self, k: int, module: str, start: CalibTensor) -> CalibTensor | None:
        """What ``module`` receives while block k alone runs on ``start``; None if it never does."""
        block = UnitChain(self.model, self.blocks[k].modules)
        return capture_inputs_of(
            self.model.get_submodule(module),
            lambda s, e: block(start.chunk(s, e).to(self.device, non_blocking=True)),
            len(start), self.store, self.kw["chunk_size"], self.kw["channels_last"],
        )  # fmt: skip


@torch.no_grad()
def verified_links(dense_model, blocks, probe: torch.Tensor, forward, device) -> list[bool]:
    """links[j]: block j's dense output equals block j+1's dense input (first calls, probe samples)."""
    ins: dict[int, torch.Tensor] = {}
    outs: dict[int, torch.Tensor] = {}
    handles = []
    for j, block in enumerate(blocks):
        first, last = dense_model.get_submodule(block.modules[0]), dense_model.get_submodule(block.modules[-1])
        handles.append(first.register_forward_pre_hook(lambda _m, args, j=j: ins.setdefault(j, args[0])))
        handles.append(last.register_forward_hook(lambda _m, _args, out, j=j: outs.setdefault(j, out)))
    try:
        forward(dense_model, probe.to(device))
    finally:
        for h in handles:
            h.remove()
    return [same_activation(outs.get(j), ins.get(j + 1)) for j in range(len(blocks) - 1)]
