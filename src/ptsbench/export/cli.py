"""ptsbench-export: a run's pruned model (saved with ``save.model=true``) in a deployable format.

  ptsbench-export RECORD --format dense|compressed|onnx --out PATH [--verify]

``dense``: a plain state dict written with ``torch.save`` (``torch.load(PATH, weights_only=True)``
reads it); ``compressed``: the sparse checkpoint (bitmask + non-zeros, safetensors); ``onnx``:
``torch.onnx.export`` (torch's exporter needs the packages onnx and onnxscript, the ``export``
extra) of the model at the run's input size, batch 1. ``--verify`` re-evaluates the rebuilt model
on the run's test split and exits 1 unless it reproduces the record's sparse metric exactly.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

from .run_model import checkpoint_path, dense_state_dict, read_record, rebuild_dense_model, rebuild_model
from .sparse_checkpoint import load_sparse, save_sparse

FORMATS = ("dense", "compressed", "onnx")
ONNX_PACKAGES = ("onnx", "onnxscript")


class ExportError(Exception):
    """A refusal the user can act on; main prints it on one line and exits 2."""


def missing_onnx_packages() -> list[str]:
    return [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]


def export(record_path: str | Path, fmt: str, out: str | Path) -> Path:
    """Write the record's model in ``fmt`` to ``out``; returns ``out``."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    record = read_record(record_path)
    if record.get("status") != "ok":
        raise ExportError(
            f"{record_path}: the run did not finish ok (status {record.get('status')!r}); nothing to export"
        )
    ckpt = checkpoint_path(record_path)
    if not ckpt.exists():
        raise ExportError(
            f"{record_path}: no saved model beside it ({ckpt.name}); re-run the configuration with save.model=true"
        )
    if fmt == "onnx" and missing_onnx_packages():
        raise ExportError(
            f"--format onnx: torch.onnx.export needs the package(s) {', '.join(missing_onnx_packages())}, "
            "which are not installed; pip install 'ptsbench[export]' (or onnx onnxscript)"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model, meta = rebuild_model(ckpt)
    if fmt == "dense":
        torch.save(dense_state_dict(model), out)
    elif fmt == "compressed":
        state, _ = load_sparse(ckpt)
        save_sparse(out, state, meta["compressed"], {k: v for k, v in meta.items() if k != "compressed"})
    else:
        _export_onnx(model, meta["build"], out)
    return out


def _export_onnx(model, build: dict, out: Path) -> None:
    import warnings

    x = torch.zeros(1, build["in_chans"], build["img_size"], build["img_size"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(out), dynamo=True, external_data=False)
    except Exception as e:  # noqa: BLE001 - the exporter's own error, on one line
        raise ExportError(f"--format onnx: torch.onnx.export failed on this model: {type(e).__name__}: {e}") from e


def reevaluate(model, record: dict) -> dict[str, float]:
    """The rebuilt model's metrics on the run's test split, evaluated as the pipeline does: against the
    outputs of the dense model rebuilt from the record's config, so a classifier's ``agreement`` and ``kl``
    are reproduced too."""
    from ..data import build_data
    from ..models import MODEL_SOURCES
    from ..models.library import eval_preprocess
    from ..schemas import typed
    from ..tasks import TASKS, EvalConfig

    cfg = record["config"]
    name = cfg["task"]["name"]
    task = TASKS.get(name)(typed("task", TASKS.config(name), cfg["task"]), typed("eval", EvalConfig, cfg["eval"]))
    model_cfg = typed("model", MODEL_SOURCES.config(cfg["model"]["source"]), cfg["model"])
    data = build_data(
        cfg["dataset"], cfg["calib"], preprocess=eval_preprocess(model_cfg), cache_dir=cfg["paths"]["cache_dir"]
    )
    build = {
        "num_classes": data.num_classes,
        "in_chans": data.in_chans,
        "img_size": data.img_size,
        "dataset": data.name,
    }
    _, reference = task.evaluate_dense(rebuild_dense_model(record, build), data, torch.device("cpu"))
    return task.evaluate_sparse(model, reference, data, torch.device("cpu"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="ptsbench-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("record", help="a run record (.json) written with save.model=true")
    ap.add_argument("--format", required=True, choices=FORMATS)
    ap.add_argument("--out", required=True, help="the file to write")
    ap.add_argument("--verify", action="store_true", help="re-evaluate and check the record's sparse metric")
    args = ap.parse_args(argv)
    try:
        out = export(args.record, args.format, args.out)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    if args.verify:
        record = read_record(args.record)
        metric = record["task"]["metric"]
        got = reevaluate(rebuild_model(checkpoint_path(args.record))[0], record)[metric]
        want = record["sparse"][metric]
        print(f"sparse {metric}: record {want!r}, rebuilt {got!r} ({'exact' if got == want else 'DIFFERS'})")
        return 0 if got == want else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
