"""``ptsbench-models``: the model repository (paper Table 1 and the embedded zoo), one row per model.

Reads every ``conf/model/*.yaml`` and prints its name, family, size, source, weights and
parameter count. Parameters are counted by building the architecture on the ``meta`` device
(shapes only: no memory, no weights), with the head of the dataset in ``trained_on``.
    ptsbench-models              # every model
    ptsbench-models vit deit     # only these families
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from . import config_dir

CONF_DIR = config_dir()
# dataset -> (classes, channels, image size) of the head and stem a model is built with
DATASET_SHAPES = {"imagenet": (1000, 3, 224), "cifar10": (10, 3, 32), "cifar100": (100, 3, 32),
                  "mnist5k": (10, 1, 28), "digits": (10, 1, 8),
                  "coco2017": (90, 3, 800), "voc07": (20, 3, 300), "digits_det": (10, 1, 64)}


def model_configs(conf_dir: Path = CONF_DIR) -> list[DictConfig]:
    return [OmegaConf.load(p) for p in sorted((conf_dir / "model").glob("*.yaml"))]


def trained_on(cfg: DictConfig) -> str:
    # the embedded zoo is trained on MNIST-5k by scripts/train_zoo.py
    return str(cfg.get("trained_on") or ("mnist5k" if cfg.get("source", "zoo") == "zoo" else "imagenet"))


def count_params(cfg: DictConfig) -> int | None:
    """Parameters of the architecture; None when its source needs an optional install that is missing
    (model.source=mmdet without `make install-mm`)."""
    from .errors import ConfigError
    from .models import MODEL_SOURCES

    classes, chans, size = DATASET_SHAPES[trained_on(cfg)]
    try:
        with torch.device("meta"):
            model = MODEL_SOURCES.get(cfg.get("source", "zoo"))(cfg, classes, chans, size)
    except ConfigError:
        if str(cfg.get("source")) != "mmdet":
            raise
        return None
    return sum(p.numel() for p in model.parameters())


def rows(families: list[str] | None = None, with_params: bool = True) -> list[dict]:
    out = []
    for cfg in model_configs():
        if families and cfg.get("family") not in families:
            continue
        weights = "(required)" if OmegaConf.is_missing(cfg, "weights") else str(cfg.get("weights", "none"))
        out.append({"name": str(cfg.name), "family": str(cfg.get("family")), "size": str(cfg.get("size")),
                    "source": str(cfg.get("source", "zoo")), "weights": weights, "trained_on": trained_on(cfg),
                    "params": count_params(cfg) if with_params else None})
    return sorted(out, key=lambda r: (r["family"], r["size"], r["name"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ptsbench-models", description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help="only these families (resnet, regnetx, vit, ...)")
    parser.add_argument("--no-params", action="store_true", help="skip the parameter count")
    args = parser.parse_args(argv)
    table = rows(args.families or None, with_params=not args.no_params)
    cols = ("name", "family", "size", "source", "weights", "trained_on", "params")
    cells = [[(f"{r[c] / 1e6:.2f}M" if c == "params" and r[c] is not None else str(r[c] or "-")) for c in cols]
             for r in table]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


if __name__ == "__main__":
    main()
