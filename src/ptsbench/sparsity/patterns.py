"""The mask phase (docs/methods.md#prunable-layers-and-masks): sparsity pattern x criterion x comparison group -> exact masks.

- ``sparsity.pattern: unstructured``: layer l loses exactly the allocator's floor(s_l * N_l)
  weights, chosen by ``sparsity.criterion`` (magnitude | wanda) within ``sparsity.group``
  (layer | row).
- ``sparsity.pattern: nm`` (``sparsity=nm``, 2:4 by default): at most N non-zeros in every M
  consecutive input channels at each kernel position (a Linear: M consecutive in_features; the
  layout sparse tensor cores accept, sparsity/selection.py), i.e. every fitting layer is at exactly
  1 - N/M; a layer whose input channels per group are not a multiple of M stays dense and is
  listed in the record. The pattern fixes every layer's rate, so only the ``uniform`` allocator
  is accepted: the others exist to choose free per-layer rates, which N:M does not have.
  ``sparsity.rate`` must be 1 - N/M (the rate of every fitting layer; the achieved global rate,
  lower when layers stay dense, is measured and recorded as always).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import torch
from omegaconf import OmegaConf

from ..errors import ConfigError
from ..schemas import Schema, knob, register_group
from .criteria import CRITERIA, ScoreContext
from .masking import num_pruned
from .selection import GROUPS, keep_mask, nm_fits, nm_keep_mask

PATTERNS = ("unstructured", "nm")
NM_ALLOCATORS = ("uniform",)


@dataclass
class UnstructuredConfig(Schema):
    """conf/sparsity/unstructured.yaml. ``criterion`` and ``group`` came after the first records:
    at their defaults (the docs/methods.md#prunable-layers-and-masks magnitude mask) they stay out of the digest, so those records match."""

    pattern: str = knob("unstructured", choices=PATTERNS)
    rate: float = knob(0.5)  # global, parameter-weighted over all prunable layers
    criterion: str = knob("magnitude", omit_at_default=True)  # magnitude | wanda (|W_ij| * ||X_j||_2)
    group: str = knob("layer", choices=GROUPS, omit_at_default=True)  # where the lowest scores compete: layer | row

    @classmethod
    def check(cls, node, path):
        rate = node.rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
            raise ConfigError(f"{path}.rate={rate!r} is outside [0, 1); pass e.g. {path}.rate=0.7")

    @classmethod
    def option_name(cls, node):
        return str(node.get("pattern", "unstructured"))


@dataclass
class NMConfig(UnstructuredConfig):
    """conf/sparsity/nm.yaml: at most n non-zeros in every m consecutive weights (2:4 by default)."""

    pattern: str = knob("nm", choices=PATTERNS)
    n: int = knob(2, ge=1)
    m: int = knob(4, ge=2)


SCHEMAS = {"unstructured": UnstructuredConfig, "nm": NMConfig}


def check_pattern_option(sp) -> None:
    """``sparsity.pattern=nm`` typed on the unstructured option leaves the N:M knobs unset (``???``): the
    option is the pattern, so say ``sparsity=nm`` instead of guessing n and m for the user."""
    if sp.get("pattern") == "nm" and (OmegaConf.is_missing(sp, "n") or OmegaConf.is_missing(sp, "m")):
        raise ConfigError(
            "sparsity.pattern=nm is not a knob to set: the sparsity option is the pattern; pass sparsity=nm "
            f"(with sparsity.n / sparsity.m); valid choices: sparsity={' | sparsity='.join(PATTERNS)}"
        )


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
        raise ConfigError(
            f"sparsity.criterion={criterion} with reconstruction=sparsegpt: SparseGPT selects "
            f"its own masks (OBS saliency); valid choices with sparsegpt: magnitude"
        )
    if pattern != "nm":
        return
    n, m = sp.get("n", 2), sp.get("m", 4)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, m)) or not 0 < n < m:
        raise ConfigError(f"sparsity.n={n!r}, sparsity.m={m!r}: need integers 0 < n < m (e.g. n=2 m=4)")
    if group != "layer":
        raise ConfigError(
            f"sparsity.group={group} with sparsity=nm: every M weights are their own group; "
            f"valid choices with nm: layer"
        )
    if cfg.allocator.name not in NM_ALLOCATORS:
        raise ConfigError(
            f"allocator={cfg.allocator.name} with sparsity=nm: {n}:{m} fixes every layer's rate at "
            f"{1 - n / m:g}, so an allocator that chooses per-layer rates has nothing to choose; "
            f"valid choices with nm: {', '.join(NM_ALLOCATORS)}"
        )
    rate = Fraction(str(cfg.sparsity.rate))
    if rate != 1 - Fraction(n, m):
        raise ConfigError(
            f"sparsity.rate={cfg.sparsity.rate} with sparsity=nm n={n} m={m}: the pattern prunes "
            f"exactly {float(1 - Fraction(n, m)):g} of every fitting layer; pass "
            f"sparsity.rate={float(1 - Fraction(n, m)):g} or use sparsity=unstructured"
        )
    blocksize = cfg.reconstruction.get("blocksize")
    if recon == "sparsegpt" and blocksize is not None and blocksize % m:
        raise ConfigError(
            f"reconstruction.blocksize={blocksize} with sparsity=nm m={m}: the column blocks must "
            f"hold whole groups of {m}; pass a multiple of {m}, e.g. reconstruction.blocksize=128"
        )


def needs_calibration(sparsity_cfg) -> bool:
    return CRITERIA.get(sparsity_cfg.get("criterion", "magnitude")).needs_calibration


def is_plain_magnitude(sparsity_cfg) -> bool:
    """The docs/methods.md#prunable-layers-and-masks default (unstructured, magnitude, per layer): masking.masks_for does it."""
    return (
        sparsity_cfg.get("pattern", "unstructured") == "unstructured"
        and sparsity_cfg.get("criterion", "magnitude") == "magnitude"
        and sparsity_cfg.get("group", "layer") == "layer"
    )


def pattern_rates(sparsity_cfg, modules: dict, rates: dict[str, float]) -> tuple[dict[str, float], dict]:
    """Per-layer rates the pattern imposes: N:M sets fitting layers to 1 - N/M and the others to 0."""
    base = {"criterion": sparsity_cfg.get("criterion", "magnitude"), "group": sparsity_cfg.get("group", "layer")}
    if sparsity_cfg.get("pattern", "unstructured") != "nm":
        return rates, {"pattern": "unstructured", **base}
    n, m = int(sparsity_cfg.get("n", 2)), int(sparsity_cfg.get("m", 4))
    dense = [name for name in rates if not nm_fits(modules[name].weight.shape, m)]
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
    report = {**context.report, "seconds": round(time.perf_counter() - t0, 4)}
    return masks, report


register_group("sparsity", "pattern", lambda: SCHEMAS)
