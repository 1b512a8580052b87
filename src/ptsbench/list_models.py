"""``ptsbench-models``: the model repository (paper Table 1 and the embedded zoo), one row per model.

Reads every ``conf/model/*.yaml`` and prints its name, family, size, source, weights and
parameter count. Parameters are counted by building the architecture on the ``meta`` device
(shapes only: no memory, no weights), with the head of the dataset in ``trained_on``.
    ptsbench-models              # every model
    ptsbench-models vit deit     # only these families
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import cast

import torch
from omegaconf import DictConfig, OmegaConf

from . import config_dir
from .data.base import DATASET_SHAPES

CONF_DIR = config_dir()


def model_configs(conf_dir: Path = CONF_DIR) -> list[DictConfig]:
    return [cast(DictConfig, OmegaConf.load(p)) for p in sorted((conf_dir / "model").glob("*.yaml"))]


def needs_checkpoint(cfg: DictConfig) -> bool:
    """No published or embedded weights: the user passes a local checkpoint (``model.weights``)."""
    return OmegaConf.is_missing(cfg, "weights") or cfg.get("weights") is None


def trained_on(cfg: DictConfig) -> str:
    if cfg.get("trained_on"):
        return str(cfg.trained_on)
    if needs_checkpoint(cfg):
        return "(the checkpoint's)"
    if cfg.get("source", "zoo") == "diffusers":  # the embedded DDPM, scripts/train_zoo_gen.py
        return "mnist5k_gen"
    # the embedded zoo is trained on Fashion-MNIST-5k and MNIST-5k by scripts/train_zoo.py; library weights on ImageNet-1K
    return "fashion5k, mnist5k" if cfg.get("source", "zoo") == "zoo" else "imagenet"


def count_params(cfg: DictConfig) -> int | None:
    """Parameters of the architecture as its weights are shaped; None when only the checkpoint
    defines them (a diffusers folder) or the dataset's shape is unknown here."""
    from .models import MODEL_SOURCES
    from .schemas import typed

    shape = DATASET_SHAPES.get(trained_on(cfg))
    if shape is None:
        return None
    classes, chans, size = shape
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loading a checkpoint into meta tensors is a no-op, said per tensor
            source = str(cfg.get("source", "zoo"))
            model = MODEL_SOURCES.get(source)(typed("model", MODEL_SOURCES.config(source), cfg), classes, chans, size)
    except Exception:  # noqa: BLE001 - a listing never fails on one model; its row says '-'
        return None
    return sum(p.numel() for p in model.parameters())


def rows(families: list[str] | None = None, with_params: bool = True) -> list[dict]:
    out = []
    for cfg in model_configs():
        if families and cfg.get("family") not in families:
            continue
        weights = "(local checkpoint required)" if needs_checkpoint(cfg) else str(cfg.get("weights", "none"))
        out.append(
            {
                "name": str(cfg.name),
                "family": str(cfg.get("family")),
                "size": str(cfg.get("size")),
                "source": str(cfg.get("source", "zoo")),
                "weights": weights,
                "trained_on": trained_on(cfg),
                "tasks": ",".join(str(t) for t in (cfg.get("tasks") or [])),
                "params": count_params(cfg) if with_params else None,
            }
        )
    return sorted(out, key=lambda r: (r["family"], r["size"], r["name"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ptsbench-models", description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help="only these families (resnet, regnetx, vit, ...)")
    parser.add_argument("--no-params", action="store_true", help="skip the parameter count")
    args = parser.parse_args(argv)
    known = sorted({str(c.get("family")) for c in model_configs()})
    unknown = [f for f in args.families if f not in known]
    if unknown:
        parser.exit(
            2, f"ptsbench-models: error: no model family {', '.join(map(repr, unknown))}; valid: {', '.join(known)}\n"
        )
    table = rows(args.families or None, with_params=not args.no_params)
    cols = ("name", "family", "size", "tasks", "source", "weights", "trained_on", "params")
    cells = [
        [(f"{r[c] / 1e6:.2f}M" if c == "params" and r[c] is not None else str(r[c] or "-")) for c in cols]
        for r in table
    ]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


if __name__ == "__main__":
    main()
