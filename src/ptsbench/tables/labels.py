"""Row labels of the tables, read from the registries: allocators ('FCPTS (ERK)'), model families
('MobileNetV2'), methods ('Magnitude + Block-wise', 'SparseGPT (dense target)') and tasks ('CLS'),
so a new allocator, family, criterion or reconstruction needs no second list here.
"""

from __future__ import annotations

from ..models.adapters import ADAPTERS
from ..reconstruction import RECONSTRUCTORS
from ..sparsity.allocators import ALLOCATORS
from ..sparsity.criteria import CRITERIA

TASK_ORDER = ("cls", "det", "gen")  # the paper's three tasks; always shown, as gaps when absent


def allocator_label(alloc_cfg: dict | None, name: str) -> str:
    """Display name of an allocator row, from its registry entry: 'ERK', 'FCPTS (ERK)', ..."""
    return ALLOCATORS.label(name, alloc_cfg or {})


def family_label(family: str) -> str:
    return ADAPTERS.label(family)


def method_label(sparsity_cfg: dict, recon_cfg: dict) -> str | None:
    """The methods-table row of a run, from the criterion and reconstruction registries
    ('Wanda', 'Wanda (layer)', 'RIA', 'Wanda + DSnoT', 'Magnitude + Block-wise', 'SparseGPT (dense target)');
    None for a Table 3 variant."""
    criterion, recon = str(sparsity_cfg.get("criterion", "magnitude")), str(recon_cfg.get("name", "none"))
    group = sparsity_cfg.get("group", "layer")
    if recon == "none":
        label = CRITERIA.label(criterion) + (" + DSnoT" if sparsity_cfg.get("refine", "none") == "dsnot" else "")
        if criterion == "wanda":  # Wanda as published compares per output row; per layer is its variant
            return label + (" (layer)" if group == "layer" else "")
    elif recon == "sparsegpt":  # selects its own mask: the criterion does not apply
        label = RECONSTRUCTORS.label(recon) + (" (dense target)" if recon_cfg.get("target") == "dense" else "")
    elif recon == "block" and recon_cfg.get("input", "sparse") == "sparse" and not recon_cfg.get("error_correction"):
        label = f"{CRITERIA.label(criterion)} + {RECONSTRUCTORS.label(recon)}"
    else:
        return None
    return label + (" (row)" if group == "row" else "")


def task_label(task: str) -> str:
    return str(task).upper()


def ordered_tasks(present) -> list[str]:
    present = [t for t in present if t is not None]
    return list(TASK_ORDER) + sorted(t for t in set(present) if t not in TASK_ORDER)
