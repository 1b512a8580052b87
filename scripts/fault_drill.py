"""Fault drill: every known bad input and fault, end to end against the CLI.

Runs each case in a temporary folder with tiny settings (zoo ResNet-20, 100 test images, 32
calibration images) and prints one line per case,
    case <concept>.<name>  expected <what must happen>  got <what happened>  PASS|FAIL
then ``N passed, N failed``; exits 1 when any case failed. A case that waits for another change
(``pending_on``) prints PENDING instead of FAIL until that change lands. CPU only, a few minutes.

    python scripts/fault_drill.py            # all cases
    python scripts/fault_drill.py -k sweeps -k inputs   # only the cases whose id starts with these
    python scripts/fault_drill.py -k security           # the payload cases
    python scripts/fault_drill.py --keep     # keep the temporary folder and print it
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
TINY = ["dataset.num_test=100", "calib.num_samples=32", "eval.batch_size=100"]


@dataclass
class Result:
    ok: bool
    got: str


@dataclass
class Case:
    id: str
    expected: str
    check: Callable[[Drill, Path], Result]
    pending_on: str = ""  # work of another change that makes this case pass; its FAIL prints as PENDING


class Drill:
    def __init__(self, work: Path):
        self.work = work
        self.cache = work / "cache"  # shared dense cache: the zoo's dense eval runs once

    def cli(
        self,
        out: Path,
        *args: str,
        multirun: bool = False,
        module: str = "ptsbench.run",
        timeout: float = 300,
        cache: bool = True,
        tiny: bool = True,
    ) -> subprocess.CompletedProcess:
        extra = (
            []
            if module != "ptsbench.run"
            else [*(TINY if tiny else []), f"paths.output_dir={out}"]
            + ([f"paths.cache_dir={self.cache}"] if cache else [])
        )
        cmd = [sys.executable, "-m", module, *(["-m"] if multirun else []), *extra, *args]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=_env())

    @staticmethod
    def records(out: Path) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HYDRA_FULL_ERROR="0")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:160] if lines else ""


def refused(*args: str, names: tuple[str, ...], tiny: bool = True) -> Callable[[Drill, Path], Result]:
    """A single run exits 2 with one ``error:`` line naming ``names``, and writes no record."""

    def check(d: Drill, out: Path) -> Result:
        p = d.cli(out, *args, tiny=tiny, timeout=150)  # a refusal takes seconds; a run that is not refused is cut
        err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
        line = err[-1] if err else _last_line(p.stderr)
        ok = (
            p.returncode == 2
            and len(err) == 1
            and all(n in line for n in names)
            and "Traceback" not in p.stderr
            and not d.records(out)
        )
        return Result(ok, f"rc={p.returncode} {line[:150]!r}")

    return check


def zoo_state(seed: int | None = None):
    """The zoo ResNet-20 weights, or (seed) freshly initialised ones of the same shape."""
    import torch

    from ptsbench.models import zoo, zoo_checkpoint_path

    if seed is None:
        return torch.load(zoo_checkpoint_path("cifar_resnet20", "mnist5k"), map_location="cpu", weights_only=True)
    torch.manual_seed(seed)
    return zoo.ZOO_ARCHS.get("cifar_resnet20")(10, 1, 28).state_dict()


# ---- wrong results -------------------------------------------------------------------------------


def stale_dense(d: Drill, out: Path) -> Result:
    import hashlib

    import torch

    w = out / "w.pt"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(zoo_state(), w)
    p1 = d.cli(out, f"model.weights={w}")
    torch.save(zoo_state(seed=1), w)  # same path, other weights
    p2 = d.cli(out, f"model.weights={w}")
    recs = sorted(d.records(out), key=lambda r: r["created"])
    if p1.returncode or p2.returncode or len(recs) != 2:
        return Result(False, f"rc={p1.returncode},{p2.returncode} records={len(recs)} {_last_line(p2.stderr)}")
    a, b = (r["dense"]["top1"] for r in recs)
    sha = hashlib.sha256(w.read_bytes()).hexdigest()
    ok = a > 0.9 and b < 0.5 and recs[0]["digest"] != recs[1]["digest"] and recs[1]["model"]["weights_sha256"] == sha
    return Result(
        ok,
        f"dense top1 {a:.3f} -> {b:.3f}, digests differ={recs[0]['digest'] != recs[1]['digest']}, "
        f"sha recorded={recs[1]['model']['weights_sha256'] == sha}",
    )


def diverged(d: Drill, out: Path) -> Result:
    p = d.cli(
        out,
        "reconstruction=block",
        "reconstruction.lr=1e6",
        "reconstruction.iters=3",
        "reconstruction.progress=false",
        "sparsity.rate=0.5",
    )
    recs = d.records(out)
    if not recs:
        return Result(False, f"rc={p.returncode} no record {_last_line(p.stderr)}")
    r = recs[0]
    units = (r.get("reconstruction") or {}).get("units", [])
    n_div = sum(bool(u.get("diverged")) for u in units)
    sp = r.get("sparsity", {})
    exact = all(abs(sp["achieved_per_layer"][k] - t) < 1e-3 for k, t in sp.get("target_per_layer", {}).items())
    ok = (
        r["status"] == "ok"
        and n_div > 0
        and exact
        and bool(sp.get("target_per_layer"))
        and all(isinstance(u["loss_after"], float) and u["loss_after"] == u["loss_after"] for u in units)
    )
    return Result(
        ok,
        f"status={r['status']} diverged units={n_div}/{len(units)} restored, "
        f"achieved={r['sparsity'].get('achieved')}, sparse top1={r.get('sparse', {}).get('top1')}",
    )


def nan_weights(d: Drill, out: Path) -> Result:
    import torch

    state = zoo_state()
    state["fc.bias"][0] = float("nan")
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / "nan.pt")
    p = d.cli(out, f"model.weights={out / 'nan.pt'}")
    recs = d.records(out)
    st = recs[0]["status"] if recs else None
    phase = (recs[0].get("error") or {}).get("phase") if recs else None
    return Result(
        p.returncode == 1 and st == "failed" and phase == "check_weights",
        f"rc={p.returncode} status={st} phase={phase}",
    )


def imagefolder_labels(d: Drill, out: Path) -> Result:
    from omegaconf import OmegaConf

    from ptsbench.data.base import LocalImagesConfig
    from ptsbench.data.imagenet import build_imagenet

    root = _fake_imagefolder(out / "data", train=("cat", "dog", "eel"), val=("dog", "eel"))
    data = build_imagenet(
        LocalImagesConfig(name="imagenet", tasks=["cls"], root=str(root), num_classes=3, img_size=32),
        OmegaConf.create({"num_samples": 2, "seed": 0}),
    )
    labels = sorted({int(data.test.source[i][1]) for i in range(len(data.test))})
    return Result(labels == [1, 2], f"val labels {labels} (train map cat=0 dog=1 eel=2)")


def imagefolder_unknown(d: Drill, out: Path) -> Result:
    root = _fake_imagefolder(out / "data", train=("cat", "dog"), val=("dog", "fox"))
    return refused(
        "dataset=imagenet",
        f"dataset.root={root}",
        "dataset.num_classes=2",
        "model=resnet18",
        "model.weights=none",
        "dataset.img_size=32",
        "calib.num_samples=2",
        names=("fox",),
        tiny=False,
    )(d, out / "run")


def _fake_imagefolder(root: Path, train, val) -> Path:
    import numpy as np
    from PIL import Image

    for split, classes in (("train", train), ("val", val)):
        for k, c in enumerate(classes):
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.fromarray(np.full((40, 40, 3), 40 * k + i, np.uint8)).save(folder / f"{i}.JPEG")
    return root


# ---- work lost --------------------------------------------------------------------------------------


def sweep_goes_on(*extra: str) -> Callable[[Drill, Path], Result]:
    def check(d: Drill, out: Path) -> Result:
        p = d.cli(out, "sparsity.rate=0.5,1.5,0.6", *extra, multirun=True)
        recs = d.records(out)
        status = sorted((r["sparsity"]["target"], r["status"], (r.get("error") or {}).get("phase")) for r in recs)
        failed = [r for r in recs if r["status"] == "failed"]
        named = "[failed] " in p.stdout + p.stderr and "sparsity.rate=1.5" in p.stdout + p.stderr
        ok = (
            status == [(0.5, "ok", None), (0.6, "ok", None), (1.5, "failed", "config")]
            and "sparsity.rate=1.5" in failed[0]["error"]["message"]
            and named
        )
        return Result(ok, f"rc={p.returncode} records {status}, [failed] line names the run={named}")

    return check


def missing_checkpoint_sweep(d: Drill, out: Path) -> Result:
    p = d.cli(out, "model=cifar_resnet32,zoo_resnet20", "sparsity.rate=0.5", multirun=True)
    got = sorted((r["model"]["name"], r["status"], (r.get("error") or {}).get("phase")) for r in d.records(out))
    msg = next((r["error"]["message"] for r in d.records(out) if r["status"] == "failed"), "")
    ok = got == [("cifar_resnet32", "failed", "config"), ("zoo_resnet20", "ok", None)] and "model.weights" in msg
    return Result(ok, f"rc={p.returncode} records {got}")


def ok_never_replaced(d: Drill, out: Path) -> Result:
    """Re-run an ok config (skip_finished=false) so that it fails at run time with the same digest: its dense
    cache entry (paths are outside the digest) is made a folder, so writing it fails after validation."""
    p1 = d.cli(out, "sparsity.rate=0.5", cache=False)
    before = {p.name: p.read_bytes() for p in (out / "records").glob("*.json")}
    for c in (out / "cache" / "dense").glob("*.json"):
        c.unlink()
        c.mkdir()
    p2 = d.cli(out, "sparsity.rate=0.5", "skip_finished=false", cache=False)
    after = {p.name: p.read_bytes() for p in (out / "records").glob("*.json")}
    kept = all(after.get(k) == v for k, v in before.items())
    beside = [k for k in after if k.endswith(".failed.json")]
    ok = p1.returncode == 0 and p2.returncode == 1 and len(before) == 1 and kept and len(beside) == 1
    return Result(ok, f"rc={p2.returncode}, ok record unchanged={kept}, failure beside it={beside[:1]}")


def unwritable(d: Drill, out: Path) -> Result:
    out.mkdir(parents=True, exist_ok=True)
    (out / "afile").write_text("x")
    t0 = time.perf_counter()
    r = refused(f"paths.records_dir={out / 'afile' / 'records'}", names=("paths.records_dir",))(d, out)
    return Result(r.ok, f"{r.got} in {time.perf_counter() - t0:.1f}s")


def orphans(d: Drill, out: Path) -> Result:
    cmd = [
        sys.executable,
        "-m",
        "ptsbench.run",
        "-m",
        *TINY,
        f"paths.output_dir={out}",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "sparsity.rate=0.5,0.6",
        "reconstruction=single",
        "reconstruction.iters=1000000",
        "reconstruction.progress=false",
    ]
    parent = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list((out / "multirun").glob("*/.hydra"))) < 2:
            time.sleep(0.5)
        time.sleep(3)  # the jobs are past their start (watchdog running), inside reconstruction
        workers = _descendants(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.5)
        left = [w for w in workers if _alive(w)]
    finally:
        for w in _descendants(parent.pid):
            _kill(w)
    for w in left:
        _kill(w)
    return Result(bool(workers) and not left, f"{len(workers)} worker(s) before kill -9, {len(left)} alive 15 s after")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


# ---- tracebacks and messages -----------------------------------------------------------------------


def list_models(d: Drill, out: Path) -> Result:
    from ptsbench.list_models import model_configs

    p = d.cli(out, module="ptsbench.list_models")
    q = d.cli(out, "unet", module="ptsbench.list_models")
    names = {str(c.name) for c in model_configs()}
    rows = {ln.split()[0]: ln for ln in p.stdout.splitlines()[1:] if ln.strip()}
    ddpm = rows.get("zoo_ddpm_digits", "")
    ok = (
        p.returncode == 0
        and q.returncode == 0
        and set(rows) == names
        and "local checkpoint required" in rows.get("ldm", "")
        and "imagenet" not in ddpm
        and "ldm" in q.stdout
    )
    return Result(
        ok,
        f"rc={p.returncode}/{q.returncode} rows={len(rows)}/{len(names)}, ldm marked="
        f"{'local checkpoint required' in rows.get('ldm', '')}, ddpm trained_on not imagenet="
        f"{'imagenet' not in ddpm}",
    )


def corrupt_checkpoint(d: Drill, out: Path) -> Result:
    out.mkdir(parents=True, exist_ok=True)
    (out / "junk.pt").write_bytes(os.urandom(4096))
    return refused(f"model.weights={out / 'junk.pt'}", names=("junk.pt", "model.weights"))(d, out)


def checkpoint_folder(d: Drill, out: Path) -> Result:
    (out / "ckpt_dir").mkdir(parents=True, exist_ok=True)
    return refused(f"model.weights={out / 'ckpt_dir'}", names=("ckpt_dir", "folder"))(d, out)


def corrupt_dense_cache(d: Drill, out: Path) -> Result:
    p1 = d.cli(out, "sparsity.rate=0.5", cache=False)
    caches = list((out / "cache" / "dense").glob("*.json"))
    for c in caches:
        c.write_text("{not json")
    p2 = d.cli(out, "sparsity.rate=0.5", "skip_finished=false", cache=False)
    named = any(c.name in p2.stdout + p2.stderr for c in caches)
    rec = d.records(out)
    ok = p1.returncode == 0 and p2.returncode == 0 and caches and named and rec and rec[0]["status"] == "ok"
    return Result(
        bool(ok),
        f"rc={p2.returncode}, warning names the cache file={named}, "
        f"cache rewritten={bool(caches) and caches[0].read_text().startswith('{')}",
    )


def record_path_printed(d: Drill, out: Path) -> Result:
    p = d.cli(out, "sparsity.rate=0.5")
    recs = list((out / "records").glob("*.json"))
    shown = bool(recs) and str(recs[0]) in p.stdout + p.stderr
    mode = recs[0].stat().st_mode & 0o777 if recs else 0
    return Result(shown and mode & 0o040 == 0o040, f"path printed={shown}, mode={oct(mode)}")


def aggregate_names_unreadable(d: Drill, out: Path) -> Result:
    (out / "records").mkdir(parents=True, exist_ok=True)
    (out / "records" / "broken.json").write_text("{trunc")
    p = d.cli(out, str(out / "records"), "--no-plots", module="ptsbench.aggregate")
    return Result(
        "broken.json" in p.stdout + p.stderr,
        f"rc={p.returncode}, names broken.json={'broken.json' in p.stdout + p.stderr}",
    )


# ---- security, results that follow content, messages (case ids by concept) ------------------------------


class Payload:
    """Unpickled by the real unpickler, this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_payload(fmt: str, path: Path, marker: Path) -> Path:
    import pickle

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"state_dict": Payload(marker), "meta": {"hook": Payload(marker)}}
    if fmt == "plain":  # the reported reproduction: pickle.dump({"state_dict": Evil()}, f)
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    elif fmt == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    elif fmt == "lightning":
        torch.save({"epoch": 3, "global_step": 10, "hyper_parameters": {"lr": 0.1}, **obj}, path)
    else:
        torch.save(obj, path)
    return path


def _entry(entry: str, *args: str) -> subprocess.CompletedProcess:
    """A console entry point (``module:function``) run as its installed script runs it."""
    module, func = entry.split(":")
    code = f"import sys; from {module} import {func}; sys.exit({func}())"
    cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=_env())


def _refusal_line(p: subprocess.CompletedProcess, marker: Path, *names: str) -> Result:
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    ok = (
        p.returncode == 2
        and len(lines) == 1
        and all(n in line for n in names)
        and "weights_only" not in line
        and not marker.exists()
    )
    return Result(ok, f"rc={p.returncode} lines={len(lines)} marker={marker.exists()} {line[:150]!r}")


def payload_weights(fmt: str, *model: str) -> Callable[[Drill, Path], Result]:
    def check(d: Drill, out: Path) -> Result:
        marker = out / "MARK"
        path = _write_payload(fmt, out / f"evil.{fmt}.pt", marker)
        p = d.cli(out, *model, f"model.weights={path}", timeout=150)
        return _refusal_line(p, marker, "model.weights", f"`{os.system.__module__}.system`", "accepted:")

    return check


def payload_convert_ldm(d: Drill, out: Path) -> Result:
    marker = out / "MARK"
    path = _write_payload("lightning", out / "model.ckpt", marker)
    (out / "config.yaml").write_text("model: {params: {}}\n")
    p = _entry("ptsbench.models.ldm_convert:main", "--ckpt", str(path), "--config", str(out / "config.yaml"),
               "--out", str(out / "converted"))  # fmt: skip
    return _refusal_line(p, marker, "--ckpt", f"`{os.system.__module__}.system`", "accepted:")


def payload_cifar_batch(d: Drill, out: Path) -> Result:
    import pickle

    import numpy as np

    marker, folder = out / "MARK", out / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3]}
        if f == "data_batch_1":
            entry["filenames"] = [Payload(marker)]
        with open(folder / f, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
    p = d.cli(out, "model=cifar_resnet32", "model.weights=none", "dataset=cifar10", f"dataset.root={out / 'cifar'}",
              "calib.num_samples=4", tiny=False, timeout=150)  # fmt: skip
    return _refusal_line(p, marker, "dataset.root", "data_batch_1", f"`{os.system.__module__}.system`")


def weights_copied_and_touched_back(d: Drill, out: Path) -> Result:
    import hashlib

    import torch

    out.mkdir(parents=True, exist_ok=True)
    w, b = out / "w.pt", out / "b.pt"
    torch.save(zoo_state(), w)
    torch.save(zoo_state(seed=1), b)
    p1 = d.cli(out, f"model.weights={w}")
    before = os.stat(w)
    shutil.copyfile(b, w)  # cp b.pt w.pt
    os.utime(w, ns=(before.st_atime_ns, before.st_mtime_ns))  # touch -d '<old time>' w.pt
    forged = (os.stat(w).st_size, os.stat(w).st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    p2 = d.cli(out, f"model.weights={w}")
    recs = sorted(d.records(out), key=lambda r: r["created"])
    if p1.returncode or p2.returncode or len(recs) != 2:
        return Result(False, f"rc={p1.returncode},{p2.returncode} records={len(recs)} (second run skipped?)")
    sha = hashlib.sha256(w.read_bytes()).hexdigest()
    a, b_top1 = (r["dense"]["top1"] for r in recs)
    ok = forged and recs[1]["model"]["weights_sha256"] == sha and a > 0.9 and b_top1 < 0.5
    return Result(ok, f"same size+mtime={forged}, dense top1 {a:.3f} -> {b_top1:.3f}, new sha recorded={ok}")


def imagefolder_val_changed(d: Drill, out: Path) -> Result:
    root = _fake_imagefolder(out / "data", train=("cat", "dog"), val=("cat", "dog"))
    run = ("dataset=imagenet", f"dataset.root={root}", "dataset.num_classes=2", "model=resnet18",
           "model.weights=none", "dataset.img_size=32", "calib.num_samples=2")  # fmt: skip
    p1 = d.cli(out / "run", *run, tiny=False, cache=False)
    moved = root / "val" / "dog" / "1.JPEG"  # a dog becomes a cat: the dense top-1 must follow the files
    shutil.move(moved, root / "val" / "cat" / "moved.JPEG")
    p2 = d.cli(out / "run", *run, "skip_finished=false", tiny=False, cache=False)
    p3 = d.cli(out / "fresh", *run, "eval.dense_cache=false", tiny=False, cache=False)
    recs = sorted(d.records(out / "run"), key=lambda r: r["created"])  # the file names sort by digest, not time
    dense = [(r or [{}])[-1].get("dense", {}).get("top1") for r in (recs, d.records(out / "fresh"))]
    digests = len({r["digest"] for r in recs})
    ok = not (p1.returncode or p2.returncode or p3.returncode) and len(recs) == 2 and dense[0] == dense[1]
    return Result(ok and digests == 2, f"dense top1 after the change {dense[0]} vs fresh {dense[1]}, digests {digests}")


def list_models_unknown_family(d: Drill, out: Path) -> Result:
    p = d.cli(out, "nosuchfamily", module="ptsbench.list_models")
    lines = p.stderr.strip().splitlines()
    ok = p.returncode == 2 and len(lines) == 1 and "nosuchfamily" in lines[0] and "resnet" in lines[0]
    return Result(ok, f"rc={p.returncode} {lines[-1][:150] if lines else ''!r}")


def truncated_jpeg(d: Drill, out: Path) -> Result:
    root = _fake_imagefolder(out / "data", train=("cat", "dog"), val=("cat", "dog"))
    bad = root / "val" / "dog" / "1.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    return refused(
        "dataset=imagenet",
        f"dataset.root={root}",
        "dataset.num_classes=2",
        "model=resnet18",
        "model.weights=none",
        "dataset.img_size=32",
        "calib.num_samples=2",
        "dataset.num_workers=1",
        names=(str(bad), "not a readable image"),
        tiny=False,
    )(d, out / "run")


def failed_at_target(*args: str) -> Callable[[Drill, Path], Result]:
    """A run whose masks miss the target rate: exit 1, one failed record (phase mask) whose reason names the
    target, the achieved rate and the tolerance, and no ok record."""

    def check(d: Drill, out: Path) -> Result:
        p = d.cli(out, *args, "reconstruction=single", "reconstruction.iters=5")
        recs = d.records(out)
        error = (recs[0].get("error") or {}) if recs else {}
        message = str(error.get("message", ""))
        ok = (
            p.returncode == 1
            and [r["status"] for r in recs] == ["failed"]
            and error.get("phase") == "mask"
            and all(w in message for w in ("target", "achieved", "tolerance"))
            and "reconstruct" not in recs[0]["timing"]
        )
        return Result(ok, f"rc={p.returncode} {[r['status'] for r in recs]} {message[:110]!r}")

    return check


def ok_with(
    *args: str, want: Callable[[dict], bool], show: Callable[[dict], object]
) -> Callable[[Drill, Path], Result]:
    """A run that exits 0 with one ok record for which ``want`` holds (``show``: what the line prints)."""

    def check(d: Drill, out: Path) -> Result:
        p = d.cli(out, *args)
        recs = d.records(out)
        ok = p.returncode == 0 and [r["status"] for r in recs] == ["ok"] and want(recs[0])
        return Result(ok, f"rc={p.returncode} {show(recs[0]) if recs else _last_line(p.stderr)!r}")

    return check


DET = ("task=det", "model=zoo_retinanet_digits", "dataset=digits_det", "calib.num_samples=4")


# ---- paths from config values, the record target, claims, one-line CLI refusals --------------------------


def _py(out: Path, code: str, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c code args...`` in the repo (a fault injected into the CLI's own process)."""
    cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env or _env())


def _files_outside(roots: list[Path], before: set[Path], under: Path) -> list[Path]:
    after = {p for r in roots for p in r.rglob("*")}
    return sorted(p for p in after - before if not p.resolve().is_relative_to(under.resolve()))


def weights_outside(d: Drill, out: Path) -> Result:
    """model.weights reached through ``..``: Hydra's run folder stays under the output folder."""
    ckpt = out / "home" / "me" / "ckpt"
    ckpt.mkdir(parents=True)
    shutil.copy(ROOT / "src/ptsbench/zoo_checkpoints/cifar_resnet20__mnist5k.pt", ckpt / "good.pt")
    rel = os.path.relpath(ckpt / "good.pt", ROOT)
    runs = out / "o"
    p = d.cli(runs, f"model.weights={rel}", "sparsity.rate=0.5")
    beside = sorted(x.name for x in ckpt.iterdir())
    dirs = [x.name for x in (runs / "runs").iterdir()] if (runs / "runs").is_dir() else []
    ok = p.returncode == 0 and beside == ["good.pt"] and len(dirs) == 1 and "/" not in dirs[0] and ".." not in dirs[0]
    return Result(ok, f"rc={p.returncode} beside checkpoint={beside} run dir={dirs[:1]}")


def long_sweep_value(d: Drill, out: Path) -> Result:
    """A sweep value of 300+ characters: every job runs, its folder name bounded (a hash ends it)."""
    deep = out / ("w" * 100) / ("x" * 100) / ("y" * 100)
    deep.mkdir(parents=True)
    shutil.copy(ROOT / "src/ptsbench/zoo_checkpoints/cifar_resnet20__mnist5k.pt", deep / "good.pt")
    p = d.cli(out, f"model.weights={deep / 'good.pt'}", "sparsity.rate=0.5,0.6", multirun=True)
    subdirs = [x.name for x in (out / "multirun").iterdir() if x.is_dir()] if (out / "multirun").is_dir() else []
    longest = max((len(s.encode()) for s in subdirs), default=0)
    ok = p.returncode == 0 and len(d.records(out)) == 2 and len(subdirs) == 2 and longest <= 255
    return Result(ok, f"rc={p.returncode} records={len(d.records(out))} longest folder name={longest} bytes")


def tilde_output_dir(d: Drill, out: Path) -> Result:
    home = out / "home"
    home.mkdir(parents=True)
    cmd = [sys.executable, "-m", "ptsbench.run", *TINY, f"paths.cache_dir={d.cache}", "paths.output_dir='~/ptsout'"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(_env(), HOME=str(home)))
    recs = list((home / "ptsout" / "records").glob("*.json"))
    runs = (home / "ptsout" / "runs").is_dir()
    ok = p.returncode == 0 and len(recs) == 1 and runs and not (ROOT / "~").exists()
    return Result(
        ok, f"rc={p.returncode} records under ~/ptsout={len(recs)} run dir there={runs} ./~={(ROOT / '~').exists()}"
    )


def target_broken(kind: str) -> Callable[[Drill, Path], Result]:
    """records/ a dangling symlink or a symlink loop: refused at validation naming it and paths.records_dir."""

    def check(d: Drill, out: Path) -> Result:
        out.mkdir(parents=True, exist_ok=True)
        (out / "records").symlink_to(out / ("gone" if kind == "dangling" else "records"))
        return refused(names=(str(out / "records"), "paths.records_dir"))(d, out)

    return check


FULL_DISK = """
import errno, os, sys
import ptsbench.records.io as io
def full(path, *a):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "{target}")
io.{target} = full
sys.argv = [{module!r}, *sys.argv[1:]]
from {module} import main
raise SystemExit(main())
"""


def record_write_fails(d: Drill, out: Path) -> Result:
    """The final record write fails (ENOSPC): the record goes to a fallback folder and the log names it."""
    args = [*TINY, f"paths.output_dir={out}", f"paths.cache_dir={d.cache}"]
    p = _py(out, FULL_DISK.format(target="write_record", module="ptsbench.run"), *args)
    found = [x for x in out.rglob("*.json") if x.parent.name == "records" and x.parent != out / "records"]
    named = bool(found) and str(found[0]) in p.stderr
    ok = p.returncode == 0 and len(found) == 1 and named and not d.records(out)
    return Result(ok, f"rc={p.returncode} fallback records={[str(x.relative_to(out)) for x in found]} named={named}")


def aggregate_out_broken(kind: str) -> Callable[[Drill, Path], Result]:
    """ptsbench-aggregate --out under a regular file, or a full disk mid-write: one line, no partial set."""

    def check(d: Drill, out: Path) -> Result:
        first = d.cli(out, "sparsity.rate=0.5")
        if first.returncode:
            return Result(False, f"setup run rc={first.returncode} {_last_line(first.stderr)}")
        (out / "afile").write_text("x")
        tables = out / "afile" / "tables" if kind == "under-file" else out / "tables"
        if kind == "under-file":
            p = d.cli(out, str(out / "records"), "--out", str(tables), "--no-plots", module="ptsbench.aggregate")
        else:
            code = FULL_DISK.replace("import ptsbench.records.io as io", "import ptsbench.aggregate as io")
            p = _py(
                out,
                code.format(target="report_html", module="ptsbench.aggregate"),
                str(out / "records"),
                "--out",
                str(tables),
                "--no-plots",
            )
        err = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("error:")]
        left = sorted(x.name for x in out.iterdir() if "tables" in x.name)
        ok = p.returncode == 2 and len(err) == 1 and "Traceback" not in p.stderr and not left
        return Result(ok, f"rc={p.returncode} {err[-1][:120] if err else _last_line(p.stderr)!r} left={left}")

    return check


def slurm_tools_missing(d: Drill, out: Path) -> Result:
    empty = out / "bin"
    empty.mkdir(parents=True)
    cmd = [sys.executable, "-m", "ptsbench.run", "-m", *TINY, f"paths.output_dir={out}", "hydra/launcher=slurm"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(_env(), PATH=str(empty)))
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    ok = p.returncode == 2 and len(err) == 1 and "sbatch" in err[0] and "srun" in err[0] and "Traceback" not in p.stderr
    return Result(ok, f"rc={p.returncode} {err[-1][:150] if err else _last_line(p.stderr)!r}")


def claimed_run(d: Drill, out: Path) -> Result:
    """Two identical sweeps into one folder at once: each run computed once, the record there once."""
    cmd = [sys.executable, "-m", "ptsbench.run", "-m", *TINY, f"paths.output_dir={out}", f"paths.cache_dir={d.cache}"]
    cmd += ["sparsity.rate=0.5,0.6"]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    time.sleep(1.0)
    second = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    logs = [first.communicate(timeout=300)[0], second.communicate(timeout=300)[0]]
    computed = sum(log.count("[record] ok:") for log in logs)
    elsewhere = sum(log.count("[running elsewhere]") for log in logs)
    claims = list((out / "records").glob("*.claim"))
    ok = first.returncode == second.returncode == 0 and computed == 2 and len(d.records(out)) == 2 and not claims
    return Result(ok, f"rc={first.returncode},{second.returncode} computed={computed} running elsewhere={elsewhere}")


CASES = [
    Case(
        "weights.stale-dense-score",
        "replacing the weight file changes dense score and digest; sha recorded",
        stale_dense,
    ),
    Case(
        "divergence.diverged-reconstruction",
        "diverged units restored + diverged:true; pruned weights 0, no NaN",
        diverged,
    ),
    Case(
        "divergence.nan-weights-never-ok",
        "a model with a NaN weight -> failed record (phase check_weights)",
        nan_weights,
    ),
    Case(
        "split.split-seed-zoo",
        "split_seed=1 with zoo weights refused (rc 2)",
        refused("dataset.split_seed=1", names=("dataset.split_seed=1",)),
    ),
    Case(
        "split.num-test-4999",
        "refused: zoo training images in test",
        refused("dataset.num_test=4999", names=("num_test",)),
    ),
    Case("split.num-test-negative", "refused", refused("dataset.num_test=-5", names=("dataset.num_test=-5",))),
    Case("split.num-test-huge", "refused", refused("dataset.num_test=100000", names=("dataset.num_test=100000",))),
    Case("split.num-test-zero", "refused", refused("dataset.num_test=0", names=("dataset.num_test=0",))),
    Case("split.calib-negative", "refused", refused("calib.num_samples=-5", names=("calib.num_samples=-5",))),
    Case("split.calib-too-many", "refused", refused("calib.num_samples=100000", names=("calib.num_samples=100000",))),
    Case(
        "knobs.erk-power-negative",
        "refused",
        refused("allocator=erk", "allocator.power=-1", names=("allocator.power",)),
    ),
    Case("knobs.pattern-nm", "refused or really N:M", refused("sparsity.pattern=nm", names=("sparsity.pattern",))),
    Case("knobs.fold-bn-abc", "refused", refused("prune.fold_bn=abc", names=("prune.fold_bn",))),
    Case(
        "knobs.lambda-negative",
        "refused",
        refused("allocator=fcpts_erk", "allocator.lambda=-1", "allocator.iters=2", names=("allocator.lambda",)),
    ),
    Case(
        "knobs.power-abc",
        "refused before the dense eval",
        refused("allocator=erk", "allocator.power=abc", names=("allocator.power",)),
    ),
    Case("knobs.seed-abc", "refused", refused("seed=abc", names=("seed",))),
    Case("knobs.eval-batch-negative", "refused", refused("eval.batch_size=-1", names=("eval.batch_size",))),
    Case(
        "knobs.exclude-string",
        "refused as not a list",
        refused("prune.exclude=fc", names=("prune.exclude", "list")),
    ),
    Case("imagefolder.imagefolder-val-subset", "val/ labelled with train/'s class map", imagefolder_labels),
    Case("imagefolder.imagefolder-unknown-class", "a val/ class unknown to train/ refused", imagefolder_unknown),
    Case("sweeps.multirun-config-error", "0.5 and 0.6 run ok, 1.5 failed record phase config", sweep_goes_on()),
    Case(
        "sweeps.parallel-config-error",
        "same under hydra/launcher=parallel, siblings not killed",
        sweep_goes_on("hydra/launcher=parallel", "hydra.launcher.n_jobs=2"),
    ),
    Case(
        "sweeps.single-run-config-error", "single run exits 2", refused("sparsity.rate=1.5", names=("sparsity.rate",))
    ),
    Case(
        "sweeps.table2-missing-checkpoint",
        "missing checkpoint recorded failed, sweep goes on",
        missing_checkpoint_sweep,
    ),
    Case("records.ok-never-replaced", "a failed re-run of an ok config is written beside it", ok_never_replaced),
    Case("folders.unwritable-records-dir", "refused at validation (rc 2)", unwritable),
    Case("workers.orphaned-workers", "parallel workers exit after kill -9 of the sweep's parent", orphans),
    Case("cli.ptsbench-models", "lists every model, marks local-checkpoint ones, unet filter works", list_models),
    Case(
        "task-fit.task-model-mismatch", "refused naming both", refused("task=det", names=("task=det", "zoo_resnet20"))
    ),
    Case(
        "task-fit.model-task-mismatch",
        "refused naming both",
        refused("model=zoo_retinanet_digits", names=("task=cls", "zoo_retinanet_digits")),
    ),
    Case(
        "task-fit.task-dataset-mismatch",
        "refused naming both",
        refused("task=gen", "model=zoo_ddpm_digits", names=("task=gen", "mnist5k")),
    ),
    Case("inputs.device-cuda7", "refused", refused("device=cuda:7", names=("device=cuda:7",))),
    Case("inputs.device-tpu", "refused", refused("device=tpu", names=("device=tpu",))),
    Case("inputs.device-mps", "refused", refused("device=mps", names=("device=mps",))),
    Case("inputs.corrupt-checkpoint", "refused naming the file", corrupt_checkpoint),
    Case("inputs.checkpoint-is-folder", "refused naming the folder", checkpoint_folder),
    Case("inputs.corrupt-dense-cache", "warning naming the file, recomputed, run ok", corrupt_dense_cache),
    Case(
        "inputs.reconstruction-_unitwise",
        "refused",
        refused("reconstruction=_unitwise", names=("reconstruction",)),
    ),
    Case("messages.record-path-printed", "record path printed; record group-readable", record_path_printed),
    Case("messages.aggregate-unreadable", "ptsbench-aggregate names the unreadable file", aggregate_names_unreadable),
    Case("security.legacy-pickle-payload", "plain pickle payload refused, nothing run", payload_weights("plain")),
    Case("security.legacy-torch-payload", "legacy torch.save payload refused", payload_weights("legacy")),
    Case("security.zip-torch-payload", "zip torch.save payload refused", payload_weights("zip")),
    Case(
        "security.library-source-payload",
        "payload to a torchvision model refused",
        payload_weights("plain", "model=resnet18"),
    ),
    Case("security.convert-ldm-payload", "ptsbench-convert-ldm --ckpt payload refused", payload_convert_ldm),
    Case("security.cifar-batch-payload", "CIFAR batch payload refused naming the file", payload_cifar_batch),
    Case("paths.weights-outside", "weights via ../: run ok, nothing beside the checkpoint", weights_outside),
    Case("paths.long-sweep-value", "a 300-char sweep value: both jobs ok, folder name bounded", long_sweep_value),
    Case(
        "paths.model-name-escape",
        "model.name=../../../victim/PWNED refused",
        refused("model.name=../../../victim/PWNED", names=("model.name=",)),
    ),
    Case("paths.tilde-output-dir", "paths.output_dir='~/ptsout' lands in $HOME/ptsout", tilde_output_dir),
    Case("records.target-dangling-symlink", "refused naming records/ and paths.records_dir", target_broken("dangling")),
    Case("records.target-symlink-loop", "refused naming records/ and paths.records_dir", target_broken("loop")),
    Case("records.write-fails-fallback", "ENOSPC at the record write: record in a fallback, named", record_write_fails),
    Case(
        "messages.override-unquoted-space",
        "refused with the quoted form",
        refused("model.weights=/a", "b/c.pt", names=('model.weights="/a b/c.pt"',)),
    ),
    Case(
        "messages.n-jobs-zero",
        "refused",
        refused("-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=0", names=("hydra.launcher.n_jobs=0",)),
    ),
    Case("messages.slurm-tools-missing", "one line naming sbatch and srun, rc 2", slurm_tools_missing),
    Case("messages.aggregate-out-under-file", "one line, rc 2, no tables", aggregate_out_broken("under-file")),
    Case("messages.aggregate-out-disk-full", "one line, rc 2, no partial tables", aggregate_out_broken("full")),
    Case("sweeps.claimed-run", "two identical sweeps at once: each run computed once", claimed_run),
    Case(
        "results.weights-copied-touched-back",
        "cp B over A + touch back: re-run, B's hash and score",
        weights_copied_and_touched_back,
    ),
    Case(
        "results.zoo-weights-by-path-split",
        "zoo file by path + split_seed=1 refused like zoo",
        refused(
            "model.weights=src/ptsbench/zoo_checkpoints/cifar_resnet20__mnist5k.pt",
            "dataset.split_seed=1",
            names=("dataset.split_seed=1", "cifar_resnet20__mnist5k"),
        ),
    ),
    Case(
        "targets.erk-power-inf",
        "allocator.power=inf refused naming the knob and (0, 10]",
        refused("allocator=erk", "allocator.power=inf", names=("allocator.power=inf", "(0, 10]")),
    ),
    Case(
        "targets.erk-power-1e300",
        "allocator.power=1e300 refused naming the knob and (0, 10]",
        refused("allocator=erk", "allocator.power=1e300", names=("allocator.power=1e+300", "(0, 10]")),
    ),
    Case(
        "targets.keep-dense-everything",
        "prune.keep_dense=[*] at 0.7: failed record (target, achieved, tolerance), no ok",
        failed_at_target("prune.keep_dense=[*]", "sparsity.rate=0.7"),
    ),
    Case(
        "targets.nm-misfit-layers-ok",
        "2:4 with a misfit stem: ok at the documented rate",
        ok_with(
            "sparsity=nm",
            want=lambda r: abs(r["sparsity"]["achieved"] - r["sparsity"]["after_masking"]["documented"]) < 1e-9,
            show=lambda r: (r["sparsity"]["achieved"], r["masks"]["dense_layers"]),
        ),
    ),
    Case(
        "bounds.fcpts-temperature-inf",
        "allocator.temperature=inf refused naming the knob and its range",
        refused("allocator=fcpts_erk", "allocator.temperature=inf", names=("allocator.temperature=inf", "(0, 100]")),
    ),
    Case(
        "bounds.reconstruction-lr-nan",
        "reconstruction.lr=nan refused naming the knob and its range",
        refused("reconstruction=block", "reconstruction.lr=nan", names=("reconstruction.lr=nan", "[0, 1e+06]")),
    ),
    Case(
        "memory.reconstruction-batch-100000",
        "batch 100000 on 32 calibration images: ok, effective batch 32 recorded",
        ok_with(
            "reconstruction=single",
            "reconstruction.iters=5",
            "reconstruction.batch_size=100000",
            want=lambda r: (r["reconstruction"]["batch_size"], r["reconstruction"]["batch_size_asked"]) == (32, 100000),
            show=lambda r: (r["reconstruction"]["batch_size"], r["memory"]["host_peak_mb"]),
        ),
    ),
    Case(
        "nm.one-of-three-printed-rate",
        "sparsity=nm n=1 m=3 sparsity.rate=0.666667: ok",
        ok_with(
            "sparsity=nm",
            "sparsity.n=1",
            "sparsity.m=3",
            "sparsity.rate=0.666667",
            want=lambda r: r["sparsity"]["target"] == 0.666667,
            show=lambda r: r["sparsity"]["target"],
        ),
    ),
    Case(
        "nm.one-of-three-derived-rate",
        "sparsity=nm n=1 m=3 without a rate: ok at 0.666667",
        ok_with(
            "sparsity=nm",
            "sparsity.n=1",
            "sparsity.m=3",
            want=lambda r: r["sparsity"]["target"] == 0.666667 and r["name"].endswith(r["digest"][:12]),
            show=lambda r: r["sparsity"]["target"],
        ),
    ),
    Case(
        "results.imagefolder-val-changed",
        "changed val/: new digest, dense score recomputed",
        imagefolder_val_changed,
    ),
    Case(
        "messages.models-unknown-family",
        "ptsbench-models nosuchfamily: rc 2, valid families",
        list_models_unknown_family,
    ),
    Case("messages.truncated-jpeg", "a truncated val/ JPEG: one line naming the file", truncated_jpeg),
    Case(
        "messages.digits-det-digit-size",
        "digit_size larger than the canvas refused",
        refused(
            *DET, "dataset.digit_size=[18,80]", names=("dataset.digit_size=[18,80]", "dataset.canvas=64"), tiny=False
        ),
    ),
    Case(
        "messages.digits-det-seed",
        "negative seed refused",
        refused(*DET, "dataset.seed=-1", names=("dataset.seed=-1", ">= 0"), tiny=False),
    ),
    Case(
        "messages.digits-det-memory",
        "canvases beyond memory refused",
        refused(*DET, "dataset.num_train=10000000", names=("dataset.num_train=10000000", "GiB"), tiny=False),
    ),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", action="append", default=[], help="only cases whose id starts with this (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="cases run at once (each is its own CLI process)")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if not args.k or any(c.id.startswith(k + ".") or c.id == k for k in args.k)]
    work = Path(tempfile.mkdtemp(prefix="ptsbench-drill-"))
    t0 = time.perf_counter()
    passed = failed = pending = 0
    try:
        drill = Drill(work)

        def attempt(item: tuple[int, Case]) -> tuple[Case, Result, float]:
            n, case = item
            t = time.perf_counter()
            try:
                res = case.check(drill, work / f"{n:02d}")
            except Exception as e:  # noqa: BLE001 - a drill case that crashes is a FAIL, not the end of the drill
                res = Result(False, f"drill error {type(e).__name__}: {str(e)[:200]}")
            return case, res, time.perf_counter() - t

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for case, res, seconds in pool.map(attempt, enumerate(cases)):  # printed in case order
                verdict = "PASS" if res.ok else ("PENDING" if case.pending_on else "FAIL")
                passed += verdict == "PASS"
                failed += verdict == "FAIL"
                pending += verdict == "PENDING"
                note = f" [waits for {case.pending_on}]" if verdict == "PENDING" else ""
                print(
                    f"case {case.id:32s} expected {case.expected} | got {res.got} | {verdict}{note} ({seconds:.0f}s)",
                    flush=True,
                )
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"{passed} passed, {failed} failed"
        + (
            f", {pending} pending (not counted as failed: they wait for another change, named on their lines)"
            if pending
            else ""
        )
        + f" ({time.perf_counter() - t0:.0f}s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
