"""Per-layer allocation figure (paper Fig. 4): remaining ratio 1 - s_l of every layer, per allocator.

One model, several allocators side by side as grouped bars, and the mean remaining ratio over
the allocators of each layer as a black line. Rates come straight from run records:
``record["allocation"]["rates"]`` or ``record["sparsity"]["target_per_layer"]``. Records store
dicts with sorted keys, so the model's layer order is passed separately when known
(``layer_order_from_record``: FCPTS records keep it in ``allocation.layer_order``).
"""

from __future__ import annotations

from pathlib import Path

from . import save_figure


def rates_from_record(record: dict) -> dict[str, float]:
    """The per-layer sparsity rates a run record carries (allocation first, then the target)."""
    rates = (record.get("allocation") or {}).get("rates") or (record.get("sparsity") or {}).get("target_per_layer")
    if not rates:
        raise ValueError(
            f"record {record.get('name', '?')} has no per-layer rates (allocation.rates / sparsity.target_per_layer)"
        )
    return dict(rates)


def layer_order_from_record(record: dict) -> list[str] | None:
    """The model's layer order if the record kept it (a JSON list keeps its order), else None."""
    return (record.get("allocation") or {}).get("layer_order")


def plot_layer_allocation(
    rates_by_allocator: dict[str, dict[str, float]], title: str, path: str | Path, layer_order: list[str] | None = None
) -> Path:
    """Save a PNG of the remaining ratio 1 - s_l per layer for each allocator; returns the path.

    rates_by_allocator: label -> {layer name: sparsity rate s_l in [0, 1]}. Layers missing from an
    allocator (e.g. excluded) are drawn as dense (remaining ratio 1). layer_order: x-axis order
    (layers not in it follow in the dicts' order); default: the order of the dicts.
    """
    if not rates_by_allocator:
        raise ValueError("plot_layer_allocation needs at least one allocator's rates")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(rates_by_allocator)
    layers: list[str] = [n for n in (layer_order or []) if any(n in r for r in rates_by_allocator.values())]
    for rates in rates_by_allocator.values():
        layers += [n for n in rates if n not in layers]
    remaining = np.array([[1.0 - float(rates_by_allocator[a].get(n, 0.0)) for n in layers] for a in labels])
    x = np.arange(len(layers))
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(layers) + 2), 3.8))
    for i, label in enumerate(labels):
        ax.bar(x - 0.4 + width * (i + 0.5), remaining[i], width, label=label)
    ax.plot(x, remaining.mean(axis=0), color="black", lw=1.5, marker=".", label="average")
    ax.set_xticks(x)
    ax.set_xticklabels(layers, rotation=90, fontsize=6 if len(layers) > 30 else 7)
    ax.set_ylabel("remaining ratio (1 - sparsity)")
    ax.set_ylim(0, 1.25)  # headroom for the legend
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=min(len(labels) + 1, 5), loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, plt, path, dpi=130)
