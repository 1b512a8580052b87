"""Figures of the track tables (PNG, headless Agg backend).

- ``plot_size_loss``: the paper's Fig. 5 — mean relative accuracy loss (100 - G_size, Eq. 6)
  against model size (parameter count, log axis), one line per architecture family.
- ``plot_rate_curves``: relative score against sparsity rate, one line per allocator, one
  panel per task (the data of Table 2, before the MS reduction).
- ``plot_allocations``: the paper's Fig. 4 — per-layer rates of each allocator for one model
  at one rate, drawn by ``ptsbench.plots.allocation.plot_layer_allocation``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from . import save_figure

log = logging.getLogger("ptsbench")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_size_loss(sizes: pd.DataFrame, path: str | Path) -> Path | None:
    """Fig. 5 from the per-size frame of Table 6 (columns dataset, family, params, loss)."""
    sizes = sizes.dropna(subset=["params", "loss"])
    if sizes.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    several = sizes.dataset.nunique() > 1
    for (dataset, family), g in sizes.groupby(["dataset", "family"], sort=False):
        g = g.sort_values("params")
        label = f"{family} ({dataset})" if several else family
        ax.plot(g.params, g.loss, marker="o", label=label)
        for _, r in g.iterrows():
            ax.annotate(str(r["size"]), (r.params, r.loss), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("mean relative accuracy loss, 100 - G_size (%)")
    ax.set_title("Relative accuracy loss vs model size (no reconstruction)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, plt, path)


def plot_rate_curves(curves: dict[str, dict[str, dict[float, float]]], path: str | Path) -> Path | None:
    """Relative score x100 vs rate per allocator; ``curves``: task -> allocator -> rate -> score."""
    curves = {t: c for t, c in curves.items() if c}
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 4.0), squeeze=False)
    for ax, (task, by_alloc) in zip(axes[0], sorted(curves.items())):
        for alloc, points in by_alloc.items():
            rates = sorted(points)
            ax.plot([100 * r for r in rates], [100 * points[r] for r in rates], marker="o", label=alloc)
        ax.set_title(f"{task.upper()}: relative score vs sparsity")
        ax.set_xlabel("sparsity rate (%)")
        ax.set_ylabel("relative score x100 (dense = 100)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, plt, path)


def plot_allocations(ok_runs: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Fig. 4 for each (model, dataset) at its highest rate with >= 2 allocators (in registry order),
    via ``plots.allocation.plot_layer_allocation(rates_by_allocator, title, path)``."""
    from .allocation import plot_layer_allocation

    runs = ok_runs[
        (ok_runs.reconstruction == "none") & ok_runs.per_layer.map(lambda x: isinstance(x, dict) and bool(x))
    ]
    paths = []
    for (task, model, dataset), g in runs.groupby(["task", "model", "dataset"], sort=False):
        multi = g.groupby("rate").allocator.nunique()
        multi = multi[multi >= 2]
        if multi.empty:
            continue
        rate = float(multi.index.max())
        at = g[g.rate == rate].drop_duplicates("allocator")
        at = at.iloc[sorted(range(len(at)), key=lambda i: at.allocator_order.iloc[i])]  # registry order
        rates_by_allocator = {
            r.allocator: {n: r.per_layer[n] for n in network_order(r.per_layer)} for _, r in at.iterrows()
        }
        path = Path(out_dir) / f"fig4_allocation_{task}_{model}_{dataset}_s{rate:g}.png"
        try:
            plot_layer_allocation(rates_by_allocator, f"{model} on {dataset}, sparsity {rate:.0%}", path)
            paths.append(path)
        except Exception as e:  # noqa: BLE001 - a figure must never sink the tables
            log.warning("per-layer allocation plot for %s failed: %s: %s", model, type(e).__name__, e)
    return paths


HEADS = ("fc", "head", "classifier")
STEMS = ("stem", "conv_stem", "patch_embed")


def network_order(names) -> list[str]:
    """Records keep layers sorted by name (fc before layer1); restore input-to-output order
    approximately: top-level and stem layers first, then blocks in natural order (layer2 <
    layer10), the classifier head last.

    >>> network_order(["fc", "layer10.conv", "conv1", "layer2.conv", "blocks.0.qkv", "patch_embed.proj"])
    ['conv1', 'patch_embed.proj', 'blocks.0.qkv', 'layer2.conv', 'layer10.conv', 'fc']
    """

    def key(name: str):
        top = name.split(".")[0]
        rank = 2 if top in HEADS else 0 if ("." not in name or top in STEMS) else 1
        return rank, [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]

    return sorted(names, key=key)
