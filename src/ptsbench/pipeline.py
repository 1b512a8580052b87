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
import time
import traceback
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from . import record as rec_io
from . import schemas
from .data import build_data
from .data.base import CalibConfig
from .errors import ConfigError
from .export.run_model import model_sizes, save_run_model
from .failed_records import write_record
from .models import build_model
from .models.adapters import get_adapter
from .models.library import eval_preprocess
from .phases import Phases
from .reconstruction import RECONSTRUCTORS
from .run_identity import record_identity, weights_identity
from .run_record import log_summary, new_record, peak_memory
from .sparsity import patterns
from .sparsity.allocators import ALLOCATORS, AllocContext
from .sparsity.budget import rate_over_included
from .sparsity.criteria import ScoreContext
from .sparsity.deployable import deployable_report
from .sparsity.layers import fold_batchnorm, layer_infos, prunable_modules
from .sparsity.masking import apply_masks, masks_for, measure_sparsity
from .speed.flops import model_flops
from .speed.latency import measure_latency
from .tasks import TASKS
from .validation import group_choices, resolve_device, validate_config

__all__ = ["group_choices", "record_identity", "run", "validate_config"]

log = logging.getLogger("ptsbench")


def _dense_metrics(cfg, task, model, data, device, weights_hash: str | None) -> dict:
    # the dense metric follows the weights' content, not the path that names them (issue 12 item 1)
    keyed = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("task", "model", "dataset")}
    keyed["weights_sha256"] = weights_hash
    if _max_samples(cfg) is not None:  # a test-split prefix scores differently (absent: the keys of full-split runs)
        keyed["eval.max_samples"] = _max_samples(cfg)
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:20]
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
    record = new_record(cfg, cfg_dict, choices, digest, name, overrides, device)
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

        with phases("deploy"):  # what the pruned model weighs on disk, what hardware can run, the model itself
            record["size_bytes"] = model_sizes(model, all_modules)
            if record["masks"].get("pattern") == "nm":
                record["masks"]["deployable"] = deployable_report(
                    {n: m.weight for n, m in modules.items()}, record["masks"]["n"], record["masks"]["m"]
                )
            if cfg.save.get("model", False):
                record["saved_model"] = save_run_model(out_path, model, record, data, all_modules).name
            record["flops"] = model_flops(model, modules, task.forward_for_calibration, calib_inputs)

        if cfg.eval.get("latency", False):
            with phases("latency"):
                masks_info = record["masks"]
                record["latency"] = measure_latency(
                    model,
                    modules,
                    calib_inputs[: int(cfg.eval.latency_batch_size)],
                    task.forward_for_calibration,
                    device,
                    (masks_info["n"], masks_info["m"]) if masks_info.get("pattern") == "nm" else None,
                    repeats=int(cfg.eval.latency_repeats),
                    cache_path=Path(cfg.paths.cache_dir) / "latency_backends.json",
                )
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
            record["memory"] = peak_memory(device)
            write_record(out_path, record)
    log_summary(record)
    return record


def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    return [
        n
        for n, t in [*model.named_parameters(), *model.named_buffers()]
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


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
