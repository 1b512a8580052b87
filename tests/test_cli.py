"""The command line as a user meets it: --help, debug=fast, eval.max_samples, the sweep plan and summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ptsbench.help import help_text
from ptsbench.sweep_report import SweepReport, scan_records
from ptsbench.tasks import TASKS, EvalConfig, TaskConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "ptsbench.run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_help_lists_every_public_option_with_its_first_comment_line():
    text = help_text(CONF)
    assert text.startswith("PTSBench: a post-training sparsity benchmark")
    section = text[text.index("  reconstruction:") : text.index("  sparsity:")]
    public = sorted(f.stem for f in (CONF / "reconstruction").glob("*.yaml") if not f.stem.startswith("_"))
    assert [line.split()[0] for line in section.splitlines()[1:]] == public
    assert {"block", "layer", "none", "single"} <= set(public)
    assert "_unitwise" not in text
    assert "    fast  Smoke size for any run or sweep" in text
    assert "    uniform       Uniform: every prunable layer at the global rate." in text
    assert "  hydra/launcher:\n    parallel" in text
    assert text.count("  python -m ptsbench.run ") == 3 and "sparsity.rate=0.7" in text
    assert "-sc install=bash" in text


def test_help_is_what_the_cli_prints(tmp_path):
    proc = cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == help_text(CONF).replace("$$", "$").strip()


def test_debug_fast_shrinks_an_experiment_and_the_command_line_still_wins(make_cfg):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["experiment=table3", "debug=fast", "+case=embedded_det", "reconstruction=block"],
            return_hydra_config=True,
        )
        mine = compose(
            config_name="config",
            overrides=[
                "experiment=table3",
                "debug=fast",
                "reconstruction=block",
                "reconstruction.iters=50",
                "paths.output_dir=elsewhere",
            ],
        )
    assert (cfg.calib.num_samples, cfg.reconstruction.iters, cfg.eval.max_samples) == (32, 4, 200)
    assert (cfg.task.name, cfg.model.name, cfg.paths.output_dir) == ("det", "zoo_retinanet_digits", "outputs/debug")
    assert cfg.hydra.sweeper.params["sparsity.rate"] == "0.7"
    assert cfg.hydra.sweeper.params["reconstruction.input"] == "sparse,dense"  # the experiment's other axes stay
    assert (mine.reconstruction.iters, mine.paths.output_dir) == (50, "elsewhere")


class FixedLogits(nn.Module):
    """Predicts class 0 for every input: accuracy = share of label-0 samples."""

    def forward(self, x):
        return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], 1)


def test_eval_max_samples_scores_exactly_the_first_n_test_samples():
    labels = torch.tensor([0, 0, 1, 0, 1, 1, 1, 0, 1, 1])  # first 7: four of class 0
    batches = [(torch.zeros(len(labels[i : i + 3]), 1), labels[i : i + 3]) for i in range(0, 10, 3)]

    class Data:
        def test_loader(self, batch_size):
            return batches

    def cls(**evaluation):
        return TASKS.get("cls")(TaskConfig("cls", "top1"), EvalConfig(**evaluation))

    assert cls(batch_size=3, max_samples=7).evaluate(FixedLogits(), Data(), "cpu")["top1"] == pytest.approx(3 / 7)
    assert cls(batch_size=3).evaluate(FixedLogits(), Data(), "cpu")["top1"] == pytest.approx(4 / 10)
    assert [len(y) for _, y in cls(max_samples=7).limited(batches)] == [3, 3, 1]


def write_record(folder: Path, name: str, digest: str, status: str, error: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"name": name, "digest": digest, "status": status, "error": error}))


def test_sweep_summary_counts_what_the_records_say(tmp_path, capsys):
    records = tmp_path / "records"
    write_record(records, "old-ok", "d1", "ok")
    time.sleep(1.1)
    report = SweepReport()
    report.t0, report.records_dir = time.time(), records
    report.finished_before = {d for d, r in scan_records(records).items() if r[0]["status"] == "ok"}
    report.plan = [
        (["a=1"], "d1", "old-ok"),
        (["a=2"], "d2", "new-ok"),
        (["a=3"], "d3", "new-failed"),
        (["a=4"], "d4", "a=4"),
    ]
    write_record(records, "new-ok", "d2", "ok")
    write_record(
        records,
        "new-failed",
        "d3",
        "failed",
        {"phase": "allocate", "type": "RuntimeError", "message": "out of memory\nmore"},
    )
    cfg = OmegaConf.create(
        {
            "paths": {"output_dir": str(tmp_path)},
            "hydra": {"callbacks": {}, "sweep": {"dir": str(tmp_path / "multirun")}},
        }
    )
    report.on_multirun_end(cfg)
    out = capsys.readouterr().out
    assert re.search(rf"\[summary\] 1 ok, 1 skipped, 2 failed in \d+s; records in {re.escape(str(records))}\n", out)
    assert "  failed: new-failed (allocate: RuntimeError: out of memory)" in out
    assert "  failed: a=4 (no record written (see the job's log))" in out
    assert f"  tables: python -m ptsbench.aggregate {records} --out {tmp_path}/tables" in out


@pytest.mark.slow
def test_multirun_prints_its_plan_and_summary_and_exits_1_when_a_run_failed(tmp_path):
    # eval.batch_size=0 is now refused up front (schema); 18-30 px digits do not fit an 8 px canvas,
    # which fails part-way (building the data)
    args = [
        "-m",
        "debug=fast",
        "sparsity.rate=0.5",
        "task=det",
        "model=zoo_retinanet_digits",
        "dataset=digits_det",
        "dataset.canvas=64,8",
        f"paths.output_dir={tmp_path}/out",
    ]
    first = cli(*args, cwd=tmp_path)
    records = tmp_path / "out" / "records"
    assert f"[plan] 2 runs: 0 already finished (skipped), 2 to run; records -> {records}" in first.stdout
    assert "[summary] 1 ok, 0 skipped, 1 failed in" in first.stdout
    assert re.search(r"  failed: \S+ \(\w+: ", first.stdout), first.stdout
    assert f"  tables: python -m ptsbench.aggregate {records} --out {tmp_path}/out/tables" in first.stdout
    assert first.returncode == 1
    again = cli(*args[:-2], "dataset.canvas=64", args[-1], cwd=tmp_path)
    assert "[plan] 1 runs: 1 already finished (skipped), 0 to run" in again.stdout
    assert "[summary] 0 ok, 1 skipped, 0 failed in" in again.stdout and again.returncode == 0
