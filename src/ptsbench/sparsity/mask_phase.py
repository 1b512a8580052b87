"""The mask phase (docs/methods.md#prunable-layers-and-masks): pattern x criterion x comparison group -> exact masks.

- ``sparsity=unstructured``: layer l loses exactly the allocator's floor(s_l * N_l) weights, chosen
  by ``sparsity.criterion`` (a ``CRITERIA`` entry: magnitude, wanda, ria, ...) within ``sparsity.group``
  (layer | row), optionally refined by DSnoT (``sparsity.refine=dsnot``, sparsity/refine_dsnot.py: swaps
  within output rows at unchanged counts).
- ``sparsity=nm`` (2:4 by default): at most N non-zeros in every M consecutive input channels at each
  kernel position (a Linear: M consecutive in_features; the layout sparse tensor cores accept,
  sparsity/selection.py), i.e. every fitting layer is at exactly 1 - N/M; a layer whose input channels
  per group are not a multiple of M stays dense and is listed in the record. The pattern
  fixes every layer's rate, so only the ``uniform`` allocator is accepted: the others exist to choose
  free per-layer rates, which N:M does not have. ``sparsity.rate`` must be 1 - N/M up to its 6-digit
  rounding (the rate of every fitting layer; left out, it is derived: :func:`with_pattern_rate`); the achieved
  global rate, lower when layers stay dense, is measured and recorded.
A reconstruction registered with ``selects_masks`` (SparseGPT) then re-selects these masks itself
while it updates the weights; that step is timed as its own phase by the pipeline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError
from ..registry import Registry
from ..schemas import Schema, knob
from .criteria import CRITERIA, ScoreContext
from .refine_dsnot import input_moments, refine_masks
from .selection import GROUPS, keep_mask, nm_fits, nm_keep_mask, num_pruned

if TYPE_CHECKING:
    from .layers import PrunableLayer

NM_ALLOCATORS = ("uniform",)
REFINES = ("none", "dsnot")
NM_RATE_TOLERANCE = 1e-6  # sparsity.rate=0.666667 (1 - 1/3 as printed to 6 digits) is the 1:3 pattern
PATTERNS: Registry[str] = Registry("sparsity pattern", "sparsity")


@dataclass(frozen=True)
class UnstructuredConfig(Schema):
    """conf/sparsity/unstructured.yaml. ``criterion`` and ``group`` came after the first records:
    at their defaults (the magnitude mask) they stay out of the digest, so those records match."""

    pattern: str = knob()
    rate: float = knob(0.5)  # global, parameter-weighted over all prunable layers
    criterion: str = knob("magnitude", omit_at_default=True)  # a CRITERIA entry: magnitude | wanda
    group: str = knob("layer", choices=GROUPS, omit_at_default=True)  # where the lowest scores compete: layer | row
    refine: str = knob("none", choices=REFINES, omit_at_default=True)  # mask refinement after the criterion: dsnot

    def check(self, path: str) -> None:
        if not 0.0 <= float(self.rate) < 1.0:
            raise ConfigError(f"{path}.rate={self.rate!r} is outside [0, 1); pass e.g. {path}.rate=0.7")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"{path}.criterion={self.criterion!r}; valid choices: {', '.join(CRITERIA.names())}")

    @classmethod
    def option_name(cls, values):
        return str(values.get("pattern", "unstructured"))


@dataclass(frozen=True)
class NMConfig(UnstructuredConfig):
    """conf/sparsity/nm.yaml: at most n non-zeros in every m consecutive weights (2:4 by default)."""

    rate: float = knob()  # unset: 1 - n/m (``with_pattern_rate``); set, it must be that rate up to rounding
    n: int = knob(2, ge=1)
    m: int = knob(4, ge=2)
    # the groups of M: input channels at one kernel position (what sparse tensor cores accept). Records of
    # the earlier layout (M consecutive (c, kh, kw) columns) lack the knob, so their digests differ and a
    # re-run computes the deployable masks instead of skipping as finished
    layout: str = knob("channels", choices=("channels",))

    def __post_init__(self) -> None:
        if self.rate is None:  # built from knobs without a rate (``typed``): the pattern's own
            object.__setattr__(self, "rate", with_pattern_rate({"pattern": "nm", "n": self.n, "m": self.m}).get("rate"))

    def check(self, path: str) -> None:
        if not 0 < self.n < self.m:
            raise ConfigError(f"{path}.n={self.n!r}, {path}.m={self.m!r}: need integers 0 < n < m (e.g. n=2 m=4)")
        super().check(path)
        if self.refine != "none":
            raise ConfigError(
                f"{path}.refine={self.refine} with sparsity=nm: DSnoT refines unstructured masks; valid choices "
                f"with nm: none"
            )
        if self.group != "layer":
            raise ConfigError(
                f"{path}.group={self.group} with sparsity=nm: every M weights are their own group; "
                f"valid choices with nm: layer"
            )
        if abs(float(self.rate) - (1 - self.n / self.m)) > NM_RATE_TOLERANCE:
            rate = nm_rate(self.n, self.m)
            raise ConfigError(
                f"{path}.rate={self.rate} with sparsity=nm n={self.n} m={self.m}: the pattern prunes "
                f"exactly {rate:g} of every fitting layer; pass {path}.rate={rate:g} (or leave it out) or use "
                f"sparsity=unstructured"
            )

    @property
    def nm(self) -> tuple[int, int]:
        return self.n, self.m


def nm_rate(n: int, m: int) -> float:
    """1 - n/m to 6 digits, as the hint prints it: a derived rate and a typed one share one digest (2:4 -> 0.5)."""
    return round(float(1 - Fraction(n, m)), 6)


def with_pattern_rate(knobs: dict) -> dict:
    """The sparsity knobs as set, with ``rate`` derived where the pattern fixes it and it was left out
    (``sparsity=nm sparsity.n=1 sparsity.m=3``: 0.666667); invalid n or m are left to the schema's checks."""
    if knobs.get("pattern") != "nm" or "rate" in knobs:
        return knobs
    n, m = knobs.get("n", NMConfig.n), knobs.get("m", NMConfig.m)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, m)) or not 0 < n < m:
        return knobs
    return {**knobs, "rate": nm_rate(n, m)}


PATTERNS.register("unstructured", config=UnstructuredConfig)("unstructured")
PATTERNS.register("nm", config=NMConfig)("nm")


def check_with(sparsity: UnstructuredConfig, allocator: str, reconstruction: str, blocksize: int | None) -> None:
    """The sparsity knobs against the other groups' choices (before any heavy work)."""
    if reconstruction == "sparsegpt" and sparsity.refine != "none":
        raise ConfigError(
            f"sparsity.refine={sparsity.refine} with reconstruction=sparsegpt: DSnoT refines masks that stay as "
            f"chosen, SparseGPT selects its own; valid choices with sparsegpt: none"
        )
    if reconstruction == "sparsegpt" and sparsity.criterion != "magnitude":
        raise ConfigError(
            f"sparsity.criterion={sparsity.criterion} with reconstruction=sparsegpt: SparseGPT selects "
            f"its own masks (OBS saliency); valid choices with sparsegpt: magnitude"
        )
    if not isinstance(sparsity, NMConfig):
        return
    if allocator not in NM_ALLOCATORS:
        raise ConfigError(
            f"allocator={allocator} with sparsity=nm: {sparsity.n}:{sparsity.m} fixes every layer's rate at "
            f"{1 - sparsity.n / sparsity.m:g}, so an allocator that chooses per-layer rates has nothing to choose; "
            f"valid choices with nm: {', '.join(NM_ALLOCATORS)}"
        )
    if reconstruction == "sparsegpt" and blocksize is not None and blocksize % sparsity.m:
        raise ConfigError(
            f"reconstruction.blocksize={blocksize} with sparsity=nm m={sparsity.m}: the column blocks must "
            f"hold whole groups of {sparsity.m}; pass a multiple of {sparsity.m}, e.g. reconstruction.blocksize=128"
        )


def needs_calibration(sparsity: UnstructuredConfig) -> bool:
    return bool(CRITERIA.trait(sparsity.criterion, "needs_calibration", False)) or sparsity.refine != "none"


def pattern_rates(
    sparsity: UnstructuredConfig, modules: dict[str, PrunableLayer], rates: dict[str, float]
) -> tuple[dict[str, float], dict]:
    """Per-layer rates the pattern imposes (N:M: fitting layers at 1 - N/M, the others 0), and the
    record's ``masks`` section."""
    base = {"criterion": sparsity.criterion, "group": sparsity.group}
    if not isinstance(sparsity, NMConfig):
        return rates, {"pattern": "unstructured", **base}
    n, m = sparsity.nm
    dense = [name for name in rates if not nm_fits(modules[name].weight.shape, m)]
    out = {name: 0.0 if name in dense else 1 - n / m for name in rates}
    return out, {"pattern": "nm", **base, "n": n, "m": m, "dense_layers": dense}


@torch.no_grad()
def select_masks(
    sparsity: UnstructuredConfig, modules: dict[str, PrunableLayer], rates: dict[str, float], context: ScoreContext
) -> tuple[dict[str, torch.Tensor], dict]:
    """Keep-masks at ``rates`` under the pattern, criterion and group, and what the record says of them
    (a calibration criterion's report and its seconds)."""
    t0 = time.perf_counter()
    scores = CRITERIA.get(sparsity.criterion)().scores({n: modules[n] for n in rates}, context)
    masks = {}
    for name, rate in rates.items():
        if isinstance(sparsity, NMConfig) and rate > 0:
            masks[name] = nm_keep_mask(scores[name], sparsity.n, sparsity.m)
        else:
            masks[name] = keep_mask(scores[name], num_pruned(rate, modules[name].weight.numel()), sparsity.group)
    if sparsity.refine == "dsnot":
        names = [n for n, mask in masks.items() if not bool(mask.all())]
        moments = input_moments(
            context.dense_model, names, context.calib_inputs, context.forward, context.device, context.chunk_size
        )
        masks, refined = refine_masks(modules, masks, moments)
        context.report.update(refined)
    plain = not isinstance(sparsity, NMConfig) and (sparsity.criterion, sparsity.group, sparsity.refine) == (
        "magnitude",
        "layer",
        "none",
    )
    return masks, {} if plain else {**context.report, "seconds": round(time.perf_counter() - t0, 4)}
