"""The mask phase (docs/methods.md#prunable-layers-and-masks): sparsity pattern x criterion x comparison group -> exact masks.

- ``sparsity.pattern: unstructured``: layer l loses exactly the allocator's floor(s_l * N_l)
  weights, chosen by ``sparsity.criterion`` (magnitude | wanda) within ``sparsity.group``
  (layer | row).
- ``sparsity.pattern: nm`` (``sparsity=nm``, 2:4 by default): at most N non-zeros in every M
  consecutive weights along the GEMM input dimension (sparsity/gemm.py), i.e. every fitting layer
  is at exactly 1 - N/M; a layer whose input dimension is not a multiple of M stays dense and is
  listed in the record. The pattern fixes every layer's rate, so only the ``uniform`` allocator
  is accepted: the others exist to choose free per-layer rates, which N:M does not have.
  ``sparsity.rate`` must be 1 - N/M (the rate of every fitting layer; the achieved global rate,
  lower when layers stay dense, is measured and recorded as always).
"""
from __future__ import annotations

import time
from fractions import Fraction

import torch

from ..errors import ConfigError
from .criteria import CRITERIA, ScoreContext
from .gemm import gemm_cols
from .masking import num_pruned
from .selection import GROUPS, keep_mask, nm_fits, nm_keep_mask

PATTERNS = ("unstructured", "nm")
NM_ALLOCATORS = ("uniform",)


def check_config(cfg) -> None:
    """Cross-group checks of the sparsity knobs (run before any heavy work)."""
    sp = cfg.sparsity
    pattern = sp.get("pattern", "unstructured")
    if pattern not in PATTERNS:
        raise ConfigError(f"sparsity.pattern={pattern!r}; valid choices: {', '.join(PATTERNS)}")
    criterion = sp.get("criterion", "magnitude")
    if criterion not in CRITERIA:
        raise ConfigError(f"sparsity.criterion={criterion!r}; valid choices: {', '.join(CRITERIA.names())}")
    group = sp.get("group", "layer")
    if group not in GROUPS:
        raise ConfigError(f"sparsity.group={group!r}; valid choices: {', '.join(GROUPS)}")
    recon = cfg.reconstruction.name
    if recon == "sparsegpt" and criterion != "magnitude":
        raise ConfigError(f"sparsity.criterion={criterion} with reconstruction=sparsegpt: SparseGPT selects "
                          f"its own masks (OBS saliency); valid choices with sparsegpt: magnitude")
    if pattern != "nm":
        return
    n, m = sp.get("n", 2), sp.get("m", 4)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, m)) or not 0 < n < m:
        raise ConfigError(f"sparsity.n={n!r}, sparsity.m={m!r}: need integers 0 < n < m (e.g. n=2 m=4)")
    if group != "layer":
        raise ConfigError(f"sparsity.group={group} with sparsity=nm: every M weights are their own group; "
                          f"valid choices with nm: layer")
    if cfg.allocator.name not in NM_ALLOCATORS:
        raise ConfigError(f"allocator={cfg.allocator.name} with sparsity=nm: {n}:{m} fixes every layer's rate at "
                          f"{1 - n / m:g}, so an allocator that chooses per-layer rates has nothing to choose; "
                          f"valid choices with nm: {', '.join(NM_ALLOCATORS)}")
    rate = Fraction(str(cfg.sparsity.rate))
    if rate != 1 - Fraction(n, m):
        raise ConfigError(f"sparsity.rate={cfg.sparsity.rate} with sparsity=nm n={n} m={m}: the pattern prunes "
                          f"exactly {float(1 - Fraction(n, m)):g} of every fitting layer; pass "
                          f"sparsity.rate={float(1 - Fraction(n, m)):g} or use sparsity=unstructured")
    blocksize = cfg.reconstruction.get("blocksize")
    if recon == "sparsegpt" and blocksize is not None and blocksize % m:
        raise ConfigError(f"reconstruction.blocksize={blocksize} with sparsity=nm m={m}: the column blocks must "
                          f"hold whole groups of {m}; pass a multiple of {m}, e.g. reconstruction.blocksize=128")


def needs_calibration(sparsity_cfg) -> bool:
    return CRITERIA.get(sparsity_cfg.get("criterion", "magnitude")).needs_calibration


def is_plain_magnitude(sparsity_cfg) -> bool:
    """The docs/methods.md#prunable-layers-and-masks default (unstructured, magnitude, per layer): masking.masks_for does it."""
    return (sparsity_cfg.get("pattern", "unstructured") == "unstructured"
            and sparsity_cfg.get("criterion", "magnitude") == "magnitude"
            and sparsity_cfg.get("group", "layer") == "layer")


def pattern_rates(sparsity_cfg, modules: dict, rates: dict[str, float]) -> tuple[dict[str, float], dict]:
    """Per-layer rates the pattern imposes: N:M sets fitting layers to 1 - N/M and the others to 0."""
    base = {"criterion": sparsity_cfg.get("criterion", "magnitude"), "group": sparsity_cfg.get("group", "layer")}
    if sparsity_cfg.get("pattern", "unstructured") != "nm":
        return rates, {"pattern": "unstructured", **base}
    n, m = int(sparsity_cfg.get("n", 2)), int(sparsity_cfg.get("m", 4))
    dense = [name for name in rates if not nm_fits(gemm_cols(modules[name]), m)]
    out = {name: 0.0 if name in dense else 1 - n / m for name in rates}
    return out, {"pattern": "nm", **base, "n": n, "m": m, "dense_layers": dense}


@torch.no_grad()
def select_masks(sparsity_cfg, modules: dict, rates: dict[str, float], context: ScoreContext) -> tuple[dict, dict]:
    """Keep-masks for ``rates`` under the configured pattern, criterion and group, and a report."""
    t0 = time.perf_counter()
    criterion = CRITERIA.get(sparsity_cfg.get("criterion", "magnitude"))()
    group = sparsity_cfg.get("group", "layer")
    scores = criterion.scores({n: modules[n] for n in rates}, context)
    nm = sparsity_cfg.get("pattern", "unstructured") == "nm"
    n, m = int(sparsity_cfg.get("n", 2)), int(sparsity_cfg.get("m", 4))
    masks = {}
    for name, rate in rates.items():
        w = modules[name].weight
        if nm and rate > 0:
            masks[name] = nm_keep_mask(scores[name], n, m)
        else:
            masks[name] = keep_mask(scores[name], num_pruned(rate, w.numel()), group)
    report = {**context.report,
              "seconds": round(time.perf_counter() - t0, 4)}
    return masks, report
