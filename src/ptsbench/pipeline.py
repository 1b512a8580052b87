"""The PTS pipeline behind ``ptsbench.run``: one config in, one run record out.

build model + data -> evaluate dense (cached) -> fold BN -> allocate -> mask -> reconstruct
-> measure achieved sparsity -> evaluate sparse -> write the record atomically. Each step is a
phase (``ptsbench.phases``): its time goes into ``timing``, and a failure names it in ``error.phase``.
Bad input raises ConfigError before heavy work and writes nothing; any later failure writes a
``status: failed`` record carrying the error and no metrics, then re-raises.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import resource
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from . import preflight, schemas
from . import record as rec_io
from .data import DATASETS, build_data
from .data.base import CalibConfig
from .env_info import env_record
from .errors import ConfigError
from .failed_records import write_record
from .models import MODEL_SOURCES, build_model, weights_path
from .models.adapters import get_adapter
from .models.fingerprint import weights_sha256
from .models.library import eval_preprocess
from .phases import Phases
from .reconstruction import RECONSTRUCTORS
from .run_identity import run_digest
from .sparsity import patterns
from .sparsity.allocators import ALLOCATORS, Allocator, AllocContext, build_allocator
from .sparsity.budget import rate_over_included
from .sparsity.criteria import ScoreContext
from .sparsity.layers import fold_batchnorm, layer_infos, prunable_modules
from .sparsity.masking import apply_masks, masks_for, measure_sparsity
from .tasks import TASKS

log = logging.getLogger("ptsbench")

GROUPS = ("task", "model", "dataset", "allocator", "reconstruction", "sparsity", "calib")


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preflight.check_device(spec)
    return torch.device(spec)


def validate_config(cfg: DictConfig) -> Allocator:
    """Cheap checks of every knob, run before any data or model is touched: one schema check per group
    (types, ranges, choices: ``ptsbench.schemas``), then the checks that need files or span groups.
    Returns the allocator (built from its checked knobs), so a run builds it once."""
    patterns.check_pattern_option(cfg.sparsity)
    cfg, _ = schemas.without_foreign(cfg)
    _check_required_values(cfg)
    for knob, kind in (("seed", int), ("device", str), ("skip_finished", bool)):
        schemas.check_value(knob, cfg.get(knob), kind, {})
    for group in schemas.groups():
        schemas.check_group(group, cfg[group])
    preflight.check_task_fit(cfg)
    preflight.check_output_dirs(cfg)
    model_source = MODEL_SOURCES.get(cfg.model.get("source", "zoo"))
    if getattr(model_source, "check_config", None) is not None:
        model_source.check_config(cfg.model)
    if not getattr(model_source, "loads_weights", False):  # the weight file is on this machine (never downloaded)
        preflight.check_weights_file(weights_path(cfg.model, cfg.dataset.name))
    preflight.check_split(cfg)
    root = cfg.dataset.get("root")
    check_data = getattr(DATASETS.get(cfg.dataset.name), "check_config", None)
    if check_data is not None:  # real datasets check root and its layout, and say what they expect
        check_data(cfg.dataset)
    elif root is not None and not Path(str(root)).expanduser().exists():
        raise ConfigError(
            f"dataset.root='{root}' does not exist; point it at the {cfg.dataset.name} "
            f"data on this machine, e.g. dataset.root=/data/{cfg.dataset.name}"
        )
    patterns.check_config(cfg)  # criterion, group, N:M and their cross-group constraints
    resolve_device(str(cfg.device))
    return build_allocator(
        cfg.allocator.name,
        **{k: v for k, v in OmegaConf.to_container(cfg.allocator, resolve=True).items() if k != "name"},
    )


REQUIRED_HINTS = {
    "dataset.root": "point it at the {dataset} data on this machine, e.g. dataset.root=/data/{dataset} "
    "(conf/dataset/{dataset}.yaml describes the expected layout)",
    "model.weights": "no library publishes weights for model '{model}'; pass a local checkpoint, "
    "model.weights=/path/to/{model}.pth, or model.weights=none for random weights",
}


def _check_required_values(cfg: DictConfig) -> None:
    """A required value (``???`` in a config file) left unset is a ConfigError naming the knob."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        names = {
            "dataset": OmegaConf.select(cfg, "dataset.name", default="dataset"),
            "model": OmegaConf.select(cfg, "model.name", default="model"),
        }
        hints = [f"{k} is required: " + REQUIRED_HINTS.get(k, f"pass {k}=<value>").format(**names) for k in missing]
        raise ConfigError("; ".join(hints))


def group_choices(cfg: DictConfig) -> dict[str, str]:
    """The option picked in each group: Hydra's own record of it when Hydra composed this run, else the
    option's schema's guess from the node (``run(cfg)`` called directly, as the tests do)."""
    picked = _hydra_choices()
    out = {}
    for g in GROUPS:
        node = cfg.get(g)
        if picked.get(g):
            out[g] = str(picked[g])
        elif node is None:
            out[g] = "?"
        else:
            try:
                out[g] = schemas.schema_for(g, node).option_name(node)
            except ConfigError:
                out[g] = str(node.get("name", "?"))
    return out


def _hydra_choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return dict(HydraConfig.get().runtime.choices)


def _stable_digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def weights_identity(cfg: DictConfig) -> tuple[str | None, bool]:
    """(SHA-256 of the weight file or folder, whether it is a user path) or (None, False) for random
    init. The zoo and library weights are named by the config; a user path is not, so only its hash
    enters the run digest (zoo and library runs keep their digests)."""
    weights = str(cfg.model.get("weights", "none"))
    if weights in ("none", "None"):
        return None, False
    if getattr(MODEL_SOURCES.get(cfg.model.get("source", "zoo")), "loads_weights", False):
        if weights in ("zoo", "torchvision", "timm"):
            return None, False  # the source reads its own fixed files
        path = Path(weights).expanduser()
    else:
        path = weights_path(cfg.model, cfg.dataset.name)
    if path is None or not path.exists():
        return None, False
    return weights_sha256(path, cfg.paths.get("cache_dir")), weights not in ("zoo", "torchvision", "timm")


def _dense_metrics(cfg, task, model, data, device, weights_hash: str | None) -> dict:
    # the dense metric follows the weights' content, not the path that names them (issue 12 item 1)
    keyed = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("task", "model", "dataset")}
    keyed["weights_sha256"] = weights_hash
    if _max_samples(cfg) is not None:  # a test-split prefix scores differently (absent: the keys of full-split runs)
        keyed["eval.max_samples"] = _max_samples(cfg)
    key = _stable_digest(keyed)
    path = Path(cfg.paths.cache_dir) / "dense" / f"{cfg.model.name}-{cfg.dataset.name}-{key}.json"
    if cfg.eval.get("dense_cache", True) and path.exists():
        try:
            cached = json.loads(path.read_text())
            if isinstance(cached, dict) and cfg.task.metric in cached:
                return cached
            log.warning("[cache] %s holds no %s; evaluating the dense model again", path, cfg.task.metric)
        except (OSError, ValueError) as e:
            log.warning("[cache] %s is unreadable (%s); evaluating the dense model again", path, type(e).__name__)
    metrics = task.evaluate(model, data, device)
    if cfg.eval.get("dense_cache", True):
        rec_io.write_json_atomic(path, metrics)
    return metrics


def _max_samples(cfg) -> int | None:
    n = cfg.eval.get("max_samples")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"eval.max_samples={n!r} must be a positive integer, or null for the whole test split")
    return n


def _peak_memory(device) -> dict:
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    dev = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return {"host_peak_mb": round(host, 1), "device_peak_mb": round(dev, 1)}


def record_identity(cfg: DictConfig) -> tuple[dict, dict, str, Path]:
    """(resolved config, group choices, digest, record path) of the run ``cfg`` describes; the sweep
    plan (``ptsbench.sweep_report``) uses it to tell finished runs before they start."""
    choices = group_choices(cfg)
    cfg, _ = schemas.without_foreign(cfg)  # each group's own knobs; those of other options stay out
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    weights_hash, user_weights = weights_identity(cfg)
    digest = run_digest(schemas.digest_view(cfg_dict), weights_hash if user_weights else None)
    out_path = Path(cfg.paths.records_dir) / rec_io.record_filename(choices, float(cfg.sparsity.rate), digest)
    return cfg_dict, choices, digest, out_path


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Run one PTS configuration and return its record (also written under paths.records_dir)."""
    t_start = time.perf_counter()
    patterns.check_pattern_option(cfg.sparsity)  # before the unset N:M knobs are dropped as another option's
    cfg, not_applicable = schemas.without_foreign(cfg)  # knobs of other options: recorded, not used
    allocator = validate_config(cfg)
    cfg_dict, choices, digest, out_path = record_identity(cfg)
    weights_hash, _ = weights_identity(cfg)
    rate = float(cfg.sparsity.rate)
    records_dir = Path(cfg.paths.records_dir)
    name = out_path.stem

    if cfg.get("skip_finished", True):
        done = rec_io.load_finished(records_dir, digest)
        if done is not None:
            log.info("[skip] %s already finished", name)
            return {**done, "skipped": True}

    device = resolve_device(str(cfg.device))
    torch.manual_seed(int(cfg.seed))
    record = _new_record(cfg, cfg_dict, choices, digest, name, overrides, device)
    record["not_applicable"] = not_applicable
    record["model"]["weights_sha256"] = weights_hash
    phases = Phases(record["timing"])
    try:
        with phases("build"):
            adapter = get_adapter(cfg.model.get("family"), cfg.reconstruction.name)  # before any data is read
            task = TASKS.get(cfg.task.name)(
                batch_size=int(cfg.eval.batch_size),
                max_samples=_max_samples(cfg),
                **{k: v for k, v in cfg_dict["task"].items() if k != "name"},
            )
            record["task"]["higher_is_better"] = task.higher_is_better
            data = build_data(
                cfg.dataset, cfg.calib, preprocess=eval_preprocess(cfg.model), cache_dir=cfg.paths.cache_dir
            )
            record["calibration"]["indices_digest"] = data.meta.get("calib_indices_digest")
            record["calibration"]["num_samples"] = int(len(data.calib_inputs))
            model = build_model(cfg.model, data.num_classes, data.in_chans, data.img_size, data.name).to(device)
            record["model"]["params"] = sum(p.numel() for p in model.parameters())
            exclude = list(cfg.prune.get("exclude", []))
            keep_dense = (list(adapter.dense_globs) if cfg.prune.get("adapter_dense", True) else []) + list(
                cfg.prune.get("keep_dense", [])
            )
            prunable_modules(model, exclude)  # checks the exclude globs before any heavy work

        with phases("dense_eval"):
            record["dense"] = _dense_metrics(cfg, task, model, data, device, weights_hash)

        with phases("fold_bn"):
            record["folded_bn"] = len(fold_batchnorm(model) if cfg.prune.get("fold_bn", True) else [])
            dense_model = copy.deepcopy(model).eval().requires_grad_(False)

        with phases("allocate"):
            all_modules = prunable_modules(model, skip=keep_dense)
            modules = prunable_modules(model, exclude, skip=keep_dense)
            inner_rate = rate_over_included(
                rate,
                sum(m.weight.numel() for m in all_modules.values()),
                sum(m.weight.numel() for m in modules.values()),
            )
            calib_inputs = data.calib_inputs
            # a run that reads no calibration data gives the same result for every calib.seed
            record["calibration"]["used"] = bool(
                allocator.needs_calibration
                or cfg.reconstruction.name != "none"
                or patterns.needs_calibration(cfg.sparsity)
            )
            if record["calibration"]["used"]:  # diffusion: captured from sampling
                calib_inputs = task.calibration_inputs(dense_model, data, device, cfg.calib)
                record["calibration"]["num_samples"] = int(len(calib_inputs))
            context = AllocContext(
                model=model,
                modules=modules,
                calib_inputs=calib_inputs,
                device=device,
                seed=int(cfg.seed),
                forward=task.forward_for_calibration,
                extras={"dense_model": dense_model, "adapter": adapter},
            )
            weights = {n: m.weight.detach() for n, m in modules.items()}
            rates = allocator.allocate(layer_infos(modules), weights, inner_rate, context)
            record["allocation"] = {"rates": rates, **context.report}

        with phases("mask"):
            rates, record["masks"] = patterns.pattern_rates(cfg.sparsity, modules, rates)
            if patterns.is_plain_magnitude(cfg.sparsity):
                masks = masks_for(modules, rates)
            else:
                masks, selection = patterns.select_masks(
                    cfg.sparsity,
                    modules,
                    rates,
                    ScoreContext(
                        dense_model=dense_model,
                        calib_inputs=calib_inputs,
                        device=device,
                        forward=task.forward_for_calibration,
                    ),
                )
                record["masks"].update(selection)
            apply_masks(modules, masks)

        with phases("reconstruct"):
            record["reconstruction"] = RECONSTRUCTORS.get(cfg.reconstruction.name)(
                model,
                dense_model,
                masks,
                calib_inputs,
                cfg.reconstruction,
                device,
                adapter=adapter,
                task=task,
                sparsity=cfg.sparsity,
            )
            achieved = measure_sparsity(all_modules)
            record["sparsity"].update(
                {
                    "achieved": achieved["global"],
                    "zeros": achieved["zeros"],
                    "total": achieved["total"],
                    "target_per_layer": rates,
                    "achieved_per_layer": achieved["per_layer"],
                    "excluded": exclude,
                }
            )

        with phases("check_weights"):
            bad = non_finite_parameters(model)
            if bad:  # e.g. a diverged reconstruction or a checkpoint holding NaN: no result is reported as ok
                raise FloatingPointError(
                    f"non-finite values in {len(bad)} tensor(s) of the sparse model: "
                    f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}"
                )

        with phases("sparse_eval"):
            record["sparse"] = task.evaluate(model, data, device)
        record["status"] = "ok"
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - recorded, then re-raised
        record["error"] = {
            "type": type(e).__name__,
            "message": str(e),
            "phase": phases.current,
            "traceback": traceback.format_exc(limit=8),
        }
        record.pop("sparse", None)
        record.pop("dense", None)
        raise
    finally:
        if record["status"] == "ok" or record["error"] is not None:
            record["timing"]["total"] = round(time.perf_counter() - t_start, 4)
            record["memory"] = _peak_memory(device)
            write_record(out_path, record)
    _log_summary(record)
    return record


def _new_record(cfg, cfg_dict, choices, digest, name, overrides, device) -> dict:
    """The record before any phase ran: what was asked for; ``status: failed`` until the last phase ends."""
    return {
        "schema_version": rec_io.SCHEMA_VERSION,
        "status": "failed",
        "error": None,
        "digest": digest,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "choices": choices,
        "overrides": list(overrides or []),
        "config": cfg_dict,
        "seed": int(cfg.seed),
        "calibration": {"num_samples": int(cfg.calib.num_samples), "seed": int(cfg.calib.seed), "indices_digest": None},
        "model": {
            "name": cfg.model.name,
            "arch": cfg.model.get("arch"),
            "family": cfg.model.get("family"),
            "size": str(cfg.model.get("size")),
            "params": None,
        },
        "task": {"name": cfg.task.name, "metric": cfg.task.metric, "higher_is_better": True},
        "sparsity": {"target": float(cfg.sparsity.rate)},
        "timing": {},
        "memory": {},
        "env": env_record(device),
    }


def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    return [
        n
        for n, t in [*model.named_parameters(), *model.named_buffers()]
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def _log_summary(rec: dict) -> None:
    metric = rec["task"]["metric"]
    log.info(
        "[done] %-55s dense %s=%.4f sparse=%.4f achieved=%.4f (%.1fs)",
        rec["name"],
        metric,
        rec["dense"][metric],
        rec["sparse"][metric],
        rec["sparsity"]["achieved"],
        rec["timing"]["total"],
    )


schemas.store_in_hydra(
    {
        "allocator": {n: ALLOCATORS.get(n).config for n in ALLOCATORS},
        "reconstruction": {
            "none": RECONSTRUCTORS.get("none").config,
            "unitwise": RECONSTRUCTORS.get("block").config,
            "sparsegpt": RECONSTRUCTORS.get("sparsegpt").config,
        },
        "sparsity": patterns.SCHEMAS,
        "calib": {"default": CalibConfig},
    }
)
