"""The cost model's features of a run (``cost_model.Features``), from its resolved config: what ``ptsbench-plan``
knows of a job before it runs, and of a past run from its record.

P and F are counted by building the architecture on torch's ``meta`` device (shapes only: no weights, no
memory) at the dataset's input size (``data.base.DATASET_SHAPES``); a detector's F is its backbone's
(its post-processing cannot run on meta). N_eval is the split's size unless the config sizes it
(``dataset.num_test``, ``eval.max_samples``); GEN: generated images x sampling steps.
"""

from __future__ import annotations

import json
import warnings
from functools import cache
from pathlib import Path

from .cost_model import Features, Sample

# evaluated images of the splits a config does not size itself (dataset.num_test: null)
SPLIT_SIZES = {"imagenet": 50000, "cifar10": 10000, "cifar100": 10000, "coco2017": 5000, "voc07": 4952}
HEURISTIC = {"uniform", "l2norm", "erk"}


@cache
def model_size(model_json: str, dataset: str) -> tuple[float | None, float | None]:
    """(parameters, forward FLOPs per sample) of a model config built on the meta device at the dataset's
    input size; a detector's FLOPs are its backbone's; None where it cannot be built or counted here."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .data.base import DATASET_SHAPES
    from .models import MODEL_SOURCES
    from .schemas import typed

    shape = DATASET_SHAPES.get(dataset)
    if shape is None:
        return None, None
    classes, chans, size = shape
    cfg = json.loads(model_json)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = str(cfg.get("source", "zoo"))
            typed_cfg = typed("model", MODEL_SOURCES.config(source), cfg)
            model = MODEL_SOURCES.get(source)(typed_cfg, classes, chans, size).eval()
    except Exception:  # noqa: BLE001 - e.g. a folder-defined model: same-model records still serve
        return None, None
    params = float(sum(p.numel() for p in model.parameters()))
    x = torch.zeros(1, chans, size, size, device="meta")
    for part in (model, getattr(model, "backbone", None)):
        if part is None:
            continue
        try:
            with FlopCounterMode(display=False) as counter, torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                part(x)
            return params, float(counter.get_total_flops())
        except Exception:  # noqa: BLE001 - data-dependent ops (NMS) cannot run on meta: try the backbone
            continue
    return params, None


def eval_samples(cfg: dict) -> float:
    """Images a run evaluates (GEN: generated images x sampling steps)."""
    task, data, ev = cfg.get("task", {}), cfg.get("dataset", {}), cfg.get("eval", {}) or {}
    if task.get("name") == "gen":
        return float(task.get("num_samples") or 0) * float(task.get("steps") or 1)
    n = ev.get("max_samples") or data.get("num_test") or SPLIT_SIZES.get(str(data.get("name")), 0)
    return float(n)


def features(cfg: dict, device: str, params: float | None = None) -> Features:
    """Features of a run from its resolved config (``record['config']`` or a composed job)."""
    model = {k: v for k, v in cfg["model"].items() if k not in ("weights", "tasks", "pretrained")}
    p_meta, flops = model_size(json.dumps(model, sort_keys=True, default=str), str(cfg["dataset"]["name"]))
    alloc, recon = cfg.get("allocator", {}), cfg.get("reconstruction", {})
    fcpts = str(alloc.get("name")) not in HEURISTIC
    name = str(recon.get("name", "none"))
    rkind: tuple[str, ...]
    if name == "none":
        rkind, rwork = ("none",), 0.0
    elif name == "sparsegpt":
        rkind, rwork = ("sparsegpt",), float(cfg["calib"]["num_samples"])
    else:
        rkind = (name, str(recon.get("input", "sparse")), f"ec{int(bool(recon.get('error_correction')))}")
        rwork = float(recon.get("iters", 0)) * float(recon.get("batch_size", 1))
    return Features(
        device=device,
        task=str(cfg["task"]["name"]),
        model=str(cfg["model"]["name"]),
        family=str(cfg["model"].get("family")),
        dataset=str(cfg["dataset"]["name"]),
        params=float(params) if params else p_meta,
        flops=flops,
        n_eval=eval_samples(cfg),
        alloc="fcpts" if fcpts else "heuristic",
        alloc_work=float(alloc.get("iters", 0)) * float(alloc.get("batch_size", 1)) if fcpts else 1.0,
        recon=rkind,
        recon_work=rwork,
    )


def record_device(rec: dict) -> str:
    env = rec.get("env") or {}
    dev = str(env.get("device", "cpu"))
    return str(env.get("device_name", dev)).lower() if dev.startswith("cuda") else dev.split(":")[0]


def load_samples(records_dir: Path) -> list[Sample]:
    """Every ``ok`` record under ``records_dir`` as a cost-model sample (one per digest)."""
    out, seen = [], set()
    for path in sorted(records_dir.rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict) or rec.get("status") != "ok" or rec.get("digest") in seen:
            continue
        seen.add(rec.get("digest"))
        dev = record_device(rec)
        mem = (rec.get("memory") or {}).get("host_peak_mb" if dev == "cpu" else "device_peak_mb")
        try:
            f = features(rec["config"], dev, (rec.get("model") or {}).get("params"))
        except (KeyError, TypeError):
            continue
        out.append(Sample(f, rec.get("timing") or {}, mem))
    return out
