"""Matplotlib figures generated from run records (PNG, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, plt, path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (parents created), close it and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
