"""``python -m ptsbench.run --help``: what PTSBench is, every config group with a line per option, the
most used knobs and example commands.

Hydra prints ``hydra.help.template`` (conf/config.yaml), which is ``${ptsbench_help:}``: this
resolver builds the text from the config files themselves (each option's first comment line), so
adding an option documents it here. Options named ``_*`` are building blocks and not listed.
"""

from __future__ import annotations

from pathlib import Path

GROUP_ORDER = (
    "task",
    "model",
    "dataset",
    "allocator",
    "reconstruction",
    "sparsity",
    "calib",
    "case",
    "experiment",
    "debug",
    "paths",
    "hydra/launcher",
    "hydra/callbacks",
)
GROUP_NOTES = {
    "case": "(added with +case=...; needs DATA_ROOT/WEIGHTS_ROOT, or the embedded_* stand-ins)",
    "experiment": "(a sweep: run with -m)",
}
KNOBS = (
    ("sparsity.rate=0.7", "global, parameter-weighted sparsity in [0, 1)"),
    ("allocator.iters=200", "FCPTS optimisation steps (fcpts_erk, fcpts_l2norm)"),
    ("reconstruction.iters=400", "optimisation steps per unit (single, layer, block)"),
    ("reconstruction.input=dense", "units see the dense model's activations instead of the sparse model's"),
    ("calib.num_samples=1024", "calibration images (paper: 1,024)"),
    ("prune.exclude=[fc]", "layer-name globs kept dense (they still count in the global total)"),
    ("eval.max_samples=500", "score only the first N test samples (smoke runs)"),
    ("device=cuda:0", "auto | cpu | cuda | cuda:N"),
    ("paths.output_dir=outputs/mine", "records in <output_dir>/records, one JSON per run"),
    ("skip_finished=false", "re-run configs that already have an ok record"),
    ("hydra/launcher=parallel", "sweep jobs in parallel processes (one per GPU); slurm: submitit"),
)
EXAMPLES = (
    "python -m ptsbench.run model=zoo_resnet20 allocator=erk sparsity.rate=0.7",
    "python -m ptsbench.run -m model=zoo_resnet20 reconstruction=single,layer,block sparsity.rate=0.8,0.9 "
    "paths.output_dir=outputs/recon",
    "python -m ptsbench.run -m experiment=table3 debug=fast +case=embedded_cls,embedded_det,embedded_gen",
)


def option_doc(path: Path) -> str:
    """The first comment line of a config file (``# @package`` lines skipped), or ''."""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("# @package"):
            continue
        return line.lstrip("#").strip() if line.startswith("#") else ""
    return ""


def group_lines(conf: Path, group: str, width: int = 118) -> list[str]:
    files = sorted(p for p in (conf / group).glob("*.yaml") if not p.stem.startswith("_"))
    if not files:
        return []
    pad = max(len(p.stem) for p in files) + 2
    lines = [f"  {group}: {GROUP_NOTES.get(group, '')}".rstrip()]
    for p in files:
        doc = option_doc(p)
        text = f"    {p.stem:<{pad}}{doc}"
        lines.append(text if len(text) <= width else text[: width - 3].rstrip() + "...")
    return lines


def help_text(conf_dir: str | Path) -> str:
    conf = Path(conf_dir)
    groups = [g for g in GROUP_ORDER if (conf / g).is_dir()]
    groups += sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name not in groups and p.name[0] not in "_.")
    groups = [g for g in groups if g != "hydra"]
    out = [
        "PTSBench: a post-training sparsity benchmark for vision models (paper: PTSBench; docs/ in the repository).",
        "One run prunes a dense model to a global sparsity rate with an allocator (track 1), optionally",
        "reconstructs it on calibration data (track 2), evaluates dense and sparse, and writes one JSON record.",
        "",
        "Usage: python -m ptsbench.run [-m] [group=option ...] [knob=value ...]     (ptsbench-run when installed)",
        "  -m: multirun, comma lists sweep (sparsity.rate=0.5,0.6); a sweep prints its plan and a summary.",
        "",
        "Config groups (group=option):",
    ]
    for g in groups:
        out += group_lines(conf, g)
    out += ["", "Most used knobs:"]
    pad = max(len(k) for k, _ in KNOBS) + 2
    out += [f"  {k:<{pad}}{doc}" for k, doc in KNOBS]
    out += ["", "Examples:"] + [f"  {e}" for e in EXAMPLES]
    out += [
        "",
        "More: --cfg job (the composed config), --info, --hydra-help, -sc install=bash (shell completion);",
        "aggregate records into the paper's tables: python -m ptsbench.aggregate <output_dir>/records --out <dir>",
    ]
    return "\n".join(out).replace("$", "$$") + "\n"
