"""What a run's identity follows: the weight file's content (digest, dense score, recorded hash), not
its path; declarations that compute nothing stay out of the digest; a record's path is logged and the
record readable; a corrupt dense cache is named and recomputed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ptsbench.identity import config_digest
from ptsbench.models import zoo, zoo_checkpoint_path
from ptsbench.models.fingerprint import weights_sha256
from ptsbench.pipeline import run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dataset.num_test=100", "calib.num_samples=32", "eval.batch_size=100"]


def zoo_state(seed: int | None = None) -> dict:
    if seed is None:
        return torch.load(zoo_checkpoint_path("cifar_resnet20", "mnist5k"), map_location="cpu", weights_only=True)
    torch.manual_seed(seed)
    return zoo.ZOO_ARCHS.get("cifar_resnet20")(10, 1, 28).state_dict()


def cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ptsbench.run", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


def test_replaced_weight_file_changes_dense_score_digest_and_recorded_hash(make_cfg, tmp_path):
    w = tmp_path / "w.pt"
    torch.save(zoo_state(), w)
    first = run(make_cfg(*TINY, f"model.weights={w}"))
    torch.save(zoo_state(seed=1), w)  # same path, same size class, other weights
    second = run(make_cfg(*TINY, f"model.weights={w}"))
    assert first["dense"]["top1"] > 0.9 and second["dense"]["top1"] < 0.5  # not the cached 0.9x
    assert first["digest"] != second["digest"]
    assert second["model"]["weights_sha256"] == hashlib.sha256(w.read_bytes()).hexdigest()


def test_weight_hash_fast_path_reuses_the_hash_until_size_or_mtime_changes(tmp_path):
    w, cache = tmp_path / "w.bin", tmp_path / "cache"
    w.write_bytes(b"a" * 100)
    h1 = weights_sha256(w, cache)
    assert h1 == hashlib.sha256(b"a" * 100).hexdigest()
    index = json.loads((cache / "weights_sha256.json").read_text())
    index[str(w.resolve())]["sha256"] = "remembered"  # proves the second call reads the index, not the file
    (cache / "weights_sha256.json").write_text(json.dumps(index))
    assert weights_sha256(w, cache) == "remembered"
    w.write_bytes(b"b" * 100)
    os.utime(w, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert weights_sha256(w, cache) == hashlib.sha256(b"b" * 100).hexdigest()


def test_zoo_digest_is_unchanged_by_the_tasks_declaration(make_cfg):
    cfg = OmegaConf.to_container(make_cfg("sparsity.rate=0.5"), resolve=True)
    assert cfg["model"]["tasks"] == ["cls"] and cfg["dataset"]["tasks"] == ["cls"]
    stripped = {
        **cfg,
        "model": {k: v for k, v in cfg["model"].items() if k != "tasks"},
        "dataset": {k: v for k, v in cfg["dataset"].items() if k != "tasks"},
    }
    assert config_digest(cfg) == config_digest(stripped)


def test_record_path_is_logged_and_the_record_is_group_readable(make_cfg, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ptsbench"):
        rec = run(make_cfg(*TINY, "sparsity.rate=0.5"))
    path = tmp_path / "out" / "records" / f"{rec['name']}.json"
    assert f"[record] ok: {path}" in caplog.text
    assert path.stat().st_mode & 0o044 == 0o044 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
