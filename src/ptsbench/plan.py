"""``ptsbench-plan``: what a sweep will cost before it is submitted.

    ptsbench-plan experiment=table3 [overrides ...] [--records DIR] [--device h100] [--by model]

Expands the sweep exactly as ``python -m ptsbench.run -m`` would (``batch.expand``: the experiment's
sweep params merged with the overrides), composes every job and computes its record digest with the
function the runs use (``config.spec.identity_of``), marks the jobs whose record is already ``ok``
in the sweep's records folder (a re-run skips them), and predicts each remaining job's time and peak
memory with ``ptsbench.cost_model`` calibrated on the records under ``--records`` (default: the sweep's
own records) that ran on ``--device`` (a substring of the records' device: ``cpu``, ``h100``, ...).
Prints per-experiment totals in device-hours, the largest predicted peak memory, and the jobs it cannot
predict (no comparable records) grouped by what is missing. Without calibration records it says so.
Several experiments: ``experiment=table2,table3``. Exit status 0, 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import cast

from .cost_features import eval_samples, features, load_samples
from .cost_model import Sample, fit
from .errors import ConfigError

# what a prediction rests on, best first (cost_model's levels); a row shows the weakest of its runs'
BASES = ["none", "same model", "same family", "other models"]


def compose_jobs(experiments: list[str], overrides: list[str]) -> list[tuple[str, list[str], dict, str, str]]:
    """(experiment, job overrides, resolved config, digest, records dir) of every job of the sweeps."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from . import config_dir
    from .batch import expand
    from .config.groups import GROUPS, split_node
    from .config.spec import identity_of

    jobs = []
    for experiment in experiments:
        expanded = expand(experiment, overrides)
        GlobalHydra.instance().clear()
        initialize_config_dir(config_dir=str(config_dir()), version_base="1.3")
        for job in expanded:
            cfg = compose("config", overrides=job, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                del cfg["hydra"]
            try:
                identity = identity_of(cfg)
                cfg_dict, digest, records_dir = identity.config, identity.digest, str(identity.record_path.parent)
            except ConfigError as e:  # e.g. published weights not in this machine's cache: priced, not matched
                own = {group: split_node(group, cfg[group])[1] for group in GROUPS}
                cfg_dict, digest, records_dir = (
                    {**cast(dict, OmegaConf.to_container(cfg, resolve=True)), **own},
                    f"unidentified: {e}",
                    "",
                )
            jobs.append((experiment, job, cfg_dict, digest, records_dir))
    return jobs


def finished_digests(records_dirs: set[str]) -> set[str]:
    from .sweep_report import scan_records

    done = set()
    for folder in records_dirs:
        done |= {d for d, recs in scan_records(Path(folder)).items() if any(r["status"] == "ok" for r in recs)}
    return done


def pick_device(samples: list[Sample], wanted: str | None) -> str:
    seen = Counter(s.features.device for s in samples)
    listed = ", ".join(f"{d} ({n} records)" for d, n in seen.most_common())
    if wanted is None:
        if len(seen) > 1:
            raise ConfigError(f"--device is needed: the records ran on {listed}")
        return next(iter(seen))
    hits = [d for d in seen if wanted.lower() in d]
    if len(hits) != 1:
        raise ConfigError(
            f"--device {wanted}: {'no' if not hits else 'more than one'} device of the records matches; they ran on {listed}"
        )
    return hits[0]


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:,.0f}" if hours >= 1000 else f"{hours:.3g}"


def report(jobs, done: set[str], samples: list[Sample], device: str | None, by: str | None) -> list[str]:
    """The plan's lines: per experiment (and per ``by`` group) runs, finished, predicted device-hours and
    peak memory; then the unpredictable jobs grouped by what they lack."""
    model = fit([s for s in samples if s.features.device == device]) if device else None
    rows: dict[tuple, dict] = defaultdict(lambda: Counter())
    peak: dict[tuple, float] = defaultdict(float)
    missing: Counter = Counter()
    dense_groups: set[tuple] = set()
    for exp, _job, cfg, digest, _ in jobs:
        keys = [(exp, "")] + ([(exp, str(_group(cfg, by)))] if by else [])
        if digest in done:
            for k in keys:
                rows[k]["runs"] += 1
                rows[k]["finished"] += 1
            dense_groups.add((cfg["model"]["name"], cfg["dataset"]["name"], eval_samples(cfg)))
            continue
        f = features(cfg, device or "?")
        pred = model.predict(f) if model else None
        for k in keys:
            rows[k]["runs"] += 1
        if pred is None or pred.total is None:
            why = "no calibration records" if pred is None else "no comparable record for " + ", ".join(pred.missing)
            missing[(f.task, f.model, f.recon[0], why)] += 1
            for k in keys:
                rows[k]["unpredictable"] += 1
            continue
        seconds = pred.total
        group = (f.model, f.dataset, f.n_eval)
        if group not in dense_groups:  # the dense model is evaluated once, then read from the cache
            dense_groups.add(group)
            seconds += pred.seconds["eval"]
        weakest = max(BASES.index(b) for b in pred.basis.values() if b in BASES) if pred.basis else 0
        for k in keys:
            rows[k]["predicted"] += 1
            rows[k]["seconds"] += seconds
            rows[k]["basis"] = max(rows[k]["basis"], weakest)
            peak[k] = max(peak[k], pred.memory_mb or 0.0)
    head = (
        f"{'experiment':<12} {by or '':<28} {'runs':>6} {'finished':>8} {'to run':>6} {'predicted':>9} "
        f"{'unpredictable':>13} {'device-h':>9} {'peak GB':>8}  basis"
    )
    lines = [head]
    for (exp, group), c in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1] != "", kv[0][1])):
        gb = f"{peak[(exp, group)] / 1024:.1f}" if peak[(exp, group)] else "-"
        lines.append(
            f"{exp:<12} {group:<28} {c['runs']:>6} {c['finished']:>8} {c['runs'] - c['finished']:>6} "
            f"{c['predicted']:>9} {c['unpredictable']:>13} {_hours(c['seconds']):>9} {gb:>8}  "
            f"{BASES[c['basis']].replace(' ', '-') if c['predicted'] else '-'}"
        )
    if missing:
        lines.append("unpredictable runs (no comparable records on this device):")
        for (task, model_name, recon, why), n in sorted(missing.items()):
            lines.append(f"  {n:>5} x task={task} model={model_name} reconstruction={recon}: {why}")
    return lines


def _group(cfg: dict, by: str) -> str:
    if by == "model":
        return cfg["model"]["name"]
    if by == "reconstruction":
        return cfg["reconstruction"].get("name", "none")
    return cfg["allocator"]["name"] if by == "allocator" else cfg["task"]["name"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ptsbench-plan", description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="+", help="experiment=NAME[,NAME] and overrides, as after `ptsbench-run -m`")
    ap.add_argument("--records", type=Path, help="records to calibrate on (default: the sweep's own records)")
    ap.add_argument("--device", help="predict for this device of the records (cpu, h100, a100, ...)")
    ap.add_argument("--by", choices=["model", "task", "allocator", "reconstruction"], help="also one line per group")
    args = ap.parse_args(argv)
    exps = [o.split("=", 1)[1] for o in args.overrides if o.startswith("experiment=")]
    rest = [o for o in args.overrides if not o.startswith("experiment=")]
    try:
        if len(exps) != 1 or not exps[0]:
            raise ConfigError("pass one experiment=NAME (several: experiment=table2,table3)")
        from hydra.errors import HydraException

        from .config import register
        from .config.groups import check_overrides

        register()

        check_overrides(rest)
        try:
            jobs = compose_jobs(exps[0].split(","), rest)
        except HydraException as e:  # e.g. an option file that does not exist
            raise ConfigError(str(e).strip().splitlines()[0]) from None
        own = {j[4] for j in jobs if j[4]}
        done = finished_digests(own)
        calib = [args.records] if args.records else sorted(Path(d) for d in own)
        samples = [s for folder in calib if folder.is_dir() for s in load_samples(folder)]
        device = pick_device(samples, args.device) if samples else None
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    where = ", ".join(str(c) for c in calib)
    print(
        f"[plan] {len(jobs)} runs of experiment={exps[0]}: {sum(j[3] in done for j in jobs)} finished "
        f"(records in {', '.join(sorted(own)) or '-'})"
    )
    unidentified = [j[3] for j in jobs if j[3].startswith("unidentified: ")]
    if unidentified:
        print(
            f"[plan] {len(unidentified)} runs have no digest here, so none of them counts as finished (priced "
            f"anyway); first reason: {unidentified[0].removeprefix('unidentified: ')}"
        )
    if device is None:
        print(f"[plan] no records to calibrate on in {where}: no time predicted (pass --records DIR of past runs)")
    else:
        n = sum(s.features.device == device for s in samples)
        print(f"[plan] calibrated on {n} ok records from {where}, device {device}; times exclude queueing and start-up")
    print("\n".join(report(jobs, done, samples, device, args.by)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
