"""What a run will cost, predicted from the per-phase times of past run records (``ptsbench-plan``).

Rule: a run's time is the sum of four terms, each a coefficient times the work its config asks of
the phases it covers (records' ``timing``):

============  ==========================================  ===============================  =====================
term          phases                                      work, same model                 work, another model
============  ==========================================  ===============================  =====================
setup         build, fold_bn, mask, check_weights         1                                P
eval          sparse_eval (dense_eval: see below)          N_eval                           F x N_eval
allocate      allocate                                    1 (heuristic) | iters x batch    P | F x iters x batch
reconstruct   reconstruct (none: 0)                       iters x batch | N_calib (OBS)    F x the same
============  ==========================================  ===============================  =====================

P = parameters, F = forward FLOPs of one sample at the dataset's input size, N_eval = evaluated samples
(GEN: generated images x sampling steps), N_calib = calibration samples, iters x batch = the FCPTS or
unit-wise optimisation steps times their batch. The dense model's evaluation is cached per model and
dataset, so the planner charges it (the eval term) once per such group, not per run.

A coefficient is the median of time / work over comparable records, all on the same device:
first those of the same model and dataset with the same variant (allocator kind; reconstruction
name, input and error correction; then the name alone); else those of the same model family (ResNet,
ViT, ...), task and variant, on the scaled work; else those of the same task and variant. FLOPs
compare models of one family far better than across families (a depthwise MobileNet spends more time
per FLOP than a ResNet), hence the order. A term no record is comparable to makes the run
unpredictable: nothing is guessed.
Peak memory: the median peak of the same model's records with the same reconstruction; else
``a + b x P`` fitted by least squares to the device's records of the task (``b >= 0``: a fitted
decrease, where the process's baseline dominates small models, becomes their median).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

TERMS = {
    "setup": ("build", "fold_bn", "mask", "check_weights"),
    "eval": ("sparse_eval",),
    "allocate": ("allocate",),
    "reconstruct": ("reconstruct",),
}


@dataclass(frozen=True)
class Features:
    """What a run asks of each phase, from its resolved config (and the device it runs on)."""

    device: str
    task: str
    model: str
    family: str
    dataset: str
    params: float | None  # P
    flops: float | None  # F, None when the forward cannot be counted (then only same-model records serve)
    n_eval: float
    alloc: str  # "heuristic" | "fcpts"
    alloc_work: float
    recon: tuple[str, ...]  # ("none",) | (name, input, correction) | ("sparsegpt",)
    recon_work: float


@dataclass(frozen=True)
class Sample:
    """One past run: its features, seconds per phase and peak memory (MB)."""

    features: Features
    timing: dict[str, float]
    memory_mb: float | None


@dataclass
class Prediction:
    seconds: dict[str, float] = field(default_factory=dict)  # per term
    basis: dict[str, str] = field(default_factory=dict)  # per term: "same model" | "same family" | "other models"
    memory_mb: float | None = None
    missing: list[str] = field(default_factory=list)  # terms without comparable records

    @property
    def total(self) -> float | None:
        return None if self.missing else sum(self.seconds.values())


def term_work(f: Features, term: str) -> list[tuple[tuple, float, float | None]]:
    """[(variant, work on the same model, scale to another model)], most specific variant first;
    [] when the term costs nothing for this run (no reconstruction)."""
    if term == "setup":
        return [((), 1.0, f.params)]
    if term == "eval":
        return [((), f.n_eval, f.flops)]
    if term == "allocate":
        return [((f.alloc,), f.alloc_work, f.flops if f.alloc == "fcpts" else f.params)]
    if f.recon[0] == "none":
        return []
    variants = [f.recon, f.recon[:1]] if len(f.recon) > 1 else [f.recon]
    return [(v, f.recon_work, f.flops) for v in variants]


def _scaled(work: float, scale: float | None) -> float | None:
    return None if scale is None or scale <= 0 else work * scale


@dataclass
class CostModel:
    coef: dict[tuple, float]
    same_memory: dict[tuple, float]
    memory_line: dict[tuple, tuple[float, float]]
    counts: dict[str, int]  # records per device

    def term_seconds(self, f: Features, term: str) -> tuple[float, str] | None:
        works = term_work(f, term)
        if not works:
            return 0.0, "none"
        for variant, work, _ in works:
            c = self.coef.get(("same", f.device, f.model, f.dataset, term, variant))
            if c is not None:
                return c * work, "same model"
        for level, key, basis in (("family", (f.family,), "same family"), ("task", (), "other models")):
            for variant, work, scale in works:
                c = self.coef.get((level, f.device, f.task, *key, term, variant))
                scaled = _scaled(work, scale)
                if c is not None and scaled is not None:
                    return c * scaled, basis
        return None

    def predict(self, f: Features) -> Prediction:
        p = Prediction()
        for term in TERMS:
            got = self.term_seconds(f, term)
            if got is None:
                p.missing.append(term)
            else:
                p.seconds[term], p.basis[term] = got
        p.memory_mb = self.same_memory.get((f.device, f.model, f.dataset, f.recon[:1]))
        line = self.memory_line.get((f.device, f.task))
        if p.memory_mb is None and line is not None and f.params is not None:
            p.memory_mb = line[0] + line[1] * f.params
        return p


def fit(samples: list[Sample]) -> CostModel:
    """Coefficients and memory fits of the module docstring from past runs (``status: ok`` records)."""
    ratios: dict[tuple, list[float]] = defaultdict(list)
    mem_same: dict[tuple, list[float]] = defaultdict(list)
    mem_pairs: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for s in samples:
        f = s.features
        counts[f.device] += 1
        for term, phases in TERMS.items():
            if not all(ph in s.timing for ph in phases):
                continue
            seconds = sum(float(s.timing[ph]) for ph in phases)
            for variant, work, scale in term_work(f, term):
                if work > 0:
                    ratios[("same", f.device, f.model, f.dataset, term, variant)].append(seconds / work)
                scaled = _scaled(work, scale)
                if scaled:
                    ratios[("family", f.device, f.task, f.family, term, variant)].append(seconds / scaled)
                    ratios[("task", f.device, f.task, term, variant)].append(seconds / scaled)
        if s.memory_mb is not None:
            mem_same[(f.device, f.model, f.dataset, f.recon[:1])].append(s.memory_mb)
            if f.params:
                mem_pairs[(f.device, f.task)].append((f.params, s.memory_mb))
    lines = {}
    for key, pairs in mem_pairs.items():
        x = np.array([p for p, _ in pairs], dtype=float)
        y = np.array([m for _, m in pairs], dtype=float)
        b, a = np.polyfit(x, y, 1) if len(set(x.tolist())) >= 2 else (-1.0, 0.0)
        # memory does not shrink with size: a fitted decrease (process baseline dominating) is a constant
        lines[key] = (float(a), float(b)) if b >= 0 else (float(np.median(y)), 0.0)
    return CostModel(
        coef={k: statistics.median(v) for k, v in ratios.items()},
        same_memory={k: statistics.median(v) for k, v in mem_same.items()},
        memory_line=lines,
        counts=dict(counts),
    )
