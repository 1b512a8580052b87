"""Issue 12: every bad input refused up front, every record true, no work lost.

One test (or a parametrised group) per numbered case of the issue; tiny settings, CPU only.
scripts/fault_drill.py runs the same list end to end against the CLI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ptsbench.errors import ConfigError
from ptsbench.failed_records import write_record
from ptsbench.models import zoo, zoo_checkpoint_path
from ptsbench.models.fingerprint import weights_sha256
from ptsbench.config.spec import resolve
from ptsbench.pipeline import run
from ptsbench.reconstruction.trainer import TrainSettings, train_unit
from ptsbench.reconstruction.unit_data import CalibTensor
from ptsbench.run_identity import run_digest

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


# ---- 1. the dense score and the digest follow the weight file's content ------------------------------------


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
    from ptsbench.record import config_digest

    assert run_digest(cfg) == config_digest(stripped)


# ---- 2. a diverging reconstruction leaves no NaN and no ok record with NaN ---------------------------------


def test_remask_keeps_pruned_weights_exactly_zero_when_training_diverges():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    mask = torch.rand(4, 8) > 0.5
    with torch.no_grad():
        layer.weight.mul_(mask)
    x = CalibTensor(torch.randn(64, 8) * 1e3, nhwc=False)
    y = CalibTensor(torch.randn(64, 4), nhwc=False)
    s = TrainSettings(iters=30, batch_size=16, optimizer="sgd", lr=1e6, lr_bias=1e6, momentum=0.9)
    train_unit(layer, [layer.weight], [mask], [layer.bias], x, y, s, torch.device("cpu"))
    assert not torch.isfinite(layer.weight[mask]).all()  # the kept weights blew up ...
    assert (layer.weight[~mask] == 0).all()  # ... the pruned ones stayed exactly 0 (not NaN*0)


def test_diverged_units_get_their_weights_back_and_are_marked(make_cfg):
    rec = run(
        make_cfg(
            *TINY,
            "reconstruction=single",
            "reconstruction.lr=1e6",
            "reconstruction.iters=5",
            "reconstruction.progress=false",
            "sparsity.rate=0.5",
        )
    )
    units = rec["reconstruction"]["units"]
    diverged = [u for u in units if u["diverged"]]
    assert diverged and rec["reconstruction"]["diverged_units"] == [u["unit"] for u in diverged]
    for u in diverged:  # restored: the loss is the one before training
        assert u["loss_after"] == pytest.approx(u["loss_before"], rel=1e-6)
    sp = rec["sparsity"]
    assert all(sp["achieved_per_layer"][k] == pytest.approx(t, abs=1e-3) for k, t in sp["target_per_layer"].items())
    assert rec["status"] == "ok" and rec["sparse"]["top1"] == rec["sparse"]["top1"]


def test_a_model_with_a_nan_weight_is_never_ok(make_cfg, tmp_path):
    state = zoo_state()
    state["fc.bias"][3] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(FloatingPointError, match="fc.bias"):
        run(make_cfg(*TINY, f"model.weights={tmp_path / 'nan.pt'}"))
    (rec,) = records(tmp_path / "out")
    assert rec["status"] == "failed" and rec["error"]["phase"] == "check_weights" and "sparse" not in rec


# ---- 3. split and calibration knobs against the real sizes --------------------------------------------------


@pytest.mark.parametrize(
    "overrides, knob",
    [
        (["dataset.split_seed=1"], "dataset.split_seed=1"),
        (["dataset.num_test=4999"], "dataset.num_test=4999"),
        (["dataset.num_test=1001"], "dataset.num_test=1001"),
        (["dataset.num_test=-5"], "dataset.num_test=-5"),
        (["dataset.num_test=100000"], "dataset.num_test=100000"),
        (["dataset.num_test=0"], "dataset.num_test=0"),
        (["calib.num_samples=-5"], "calib.num_samples=-5"),
        (["calib.num_samples=4500"], "calib.num_samples=4500"),
    ],
)
def test_split_and_calibration_knobs_out_of_range_are_refused(make_cfg, overrides, knob):
    with pytest.raises(ConfigError, match=knob.replace(".", r"\.")):
        resolve(make_cfg(*overrides))


def test_zoo_test_split_stays_inside_the_images_the_zoo_never_saw(make_cfg):
    resolve(make_cfg("dataset.num_test=200"))  # a subset of the held-out 1000
    resolve(make_cfg("dataset.split_seed=1", "model.weights=none"))  # other weights: any split


def test_calibration_count_on_a_real_dataset_is_never_negative_and_never_silently_short(caplog):
    from ptsbench.data.base import sample_calibration

    assert len(sample_calibration(10, 10, 0)) == 10
    with pytest.raises(ConfigError, match=r"calib\.num_samples=-5"):
        sample_calibration(10, -5, 0)
    with caplog.at_level(logging.WARNING, logger="ptsbench"):
        assert len(sample_calibration(10, 11, 0)) == 10
    assert "calib.num_samples=11 but the calibration pool has 10 images" in caplog.text


# ---- 4. unchecked knobs (refused by the typed schemas, ptsbench.schemas) --------------------------------

KNOBS = [
    (["allocator=erk", "allocator.power=-1"], "allocator.power"),
    (["sparsity.pattern=nm"], "sparsity.pattern"),
    (["prune.fold_bn=abc"], "prune.fold_bn"),
    (["allocator=fcpts_erk", "allocator.lambda=-1"], "allocator.lambda"),
    (["allocator=erk", "allocator.power=abc"], "allocator.power"),
    (["seed=abc"], "seed"),
    (["eval.batch_size=-1"], "eval.batch_size"),
    (["prune.exclude=fc"], "prune.exclude"),
]


def _refused(make_cfg, overrides) -> str | None:
    try:
        resolve(make_cfg(*overrides))
    except ConfigError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - a typed schema refusing the value at composition counts
        if "ValidationError" in type(e).__name__:
            return str(e)
        return None  # an internal error is no refusal
    return None


@pytest.mark.parametrize("overrides, knob", KNOBS, ids=[k for _, k in KNOBS])
def test_unchecked_knob_values_are_refused(make_cfg, overrides, knob):
    msg = _refused(make_cfg, overrides)
    assert msg is not None and knob.split(".")[-1] in msg


# ---- 5. ImageFolder labels: val/ uses train/'s class map ----------------------------------------------------


def _imagefolder(root: Path, train, val) -> Path:
    import numpy as np
    from PIL import Image

    for split, classes in (("train", train), ("val", val)):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.fromarray(np.full((12, 12, 3), 30 * k + i, np.uint8)).save(root / split / c / f"{i}.JPEG")
    return root


def test_val_subset_of_non_wnid_classes_keeps_the_train_labels(tmp_path):
    from ptsbench.data.imagenet import build_imagenet

    root = _imagefolder(tmp_path, train=("cat", "dog", "eel"), val=("dog", "eel"))
    data = build_imagenet(
        OmegaConf.create({"name": "imagenet", "root": str(root), "num_classes": 3}),
        OmegaConf.create({"num_samples": 2, "seed": 0}),
    )
    assert sorted(label for _, label in data.test.source.samples) == [1, 1, 2, 2]  # dog=1, eel=2, not 0/1


def test_val_class_unknown_to_train_is_an_error(tmp_path):
    from ptsbench.data.imagenet import build_imagenet

    root = _imagefolder(tmp_path, train=("cat", "dog"), val=("dog", "fox"))
    with pytest.raises(ConfigError, match="fox"):
        build_imagenet(
            OmegaConf.create({"name": "imagenet", "root": str(root), "num_classes": 2}),
            OmegaConf.create({"num_samples": 2, "seed": 0}),
        )


# ---- 6. a config error inside a multirun is recorded and the sweep goes on ----------------------------------


@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"]], ids=["basic", "parallel"]
)
def test_multirun_config_error_is_a_failed_record_and_the_sweep_goes_on(tmp_path, launcher):
    p = cli("-m", *TINY, "sparsity.rate=0.5,1.5,0.6", *launcher, f"paths.output_dir={tmp_path}")
    got = sorted((r["sparsity"]["target"], r["status"], (r.get("error") or {}).get("phase")) for r in records(tmp_path))
    assert got == [(0.5, "ok", None), (0.6, "ok", None), (1.5, "failed", "config")], p.stderr[-2000:]
    failed = next(r for r in records(tmp_path) if r["status"] == "failed")
    assert "sparsity.rate=1.5" in failed["error"]["message"] and failed["name"].endswith(failed["digest"][:12])
    assert "[failed] " in p.stdout + p.stderr and "sparsity.rate=1.5" in p.stdout + p.stderr  # names the run


def test_missing_checkpoint_case_of_a_sweep_is_recorded_and_the_sweep_goes_on(tmp_path):
    cli("-m", *TINY, "model=cifar_resnet32,zoo_resnet20", "sparsity.rate=0.5", f"paths.output_dir={tmp_path}")
    got = sorted((r["model"]["name"], r["status"]) for r in records(tmp_path))
    assert got == [("cifar_resnet32", "failed"), ("zoo_resnet20", "ok")]
    assert (
        "model.weights is required" in next(r for r in records(tmp_path) if r["status"] == "failed")["error"]["message"]
    )


def test_single_run_config_error_still_exits_2_with_one_line_and_no_record(tmp_path):
    p = cli(*TINY, "sparsity.rate=1.5", f"paths.output_dir={tmp_path}")
    assert p.returncode == 2 and p.stderr.strip().startswith("error: sparsity.rate=1.5")
    assert len(p.stderr.strip().splitlines()) == 1 and not records(tmp_path)


# ---- 7. an ok record is never replaced by a failed one -----------------------------------------------------


def test_failed_rerun_is_written_beside_the_ok_record(make_cfg, tmp_path, monkeypatch):
    ok = run(make_cfg(*TINY, "sparsity.rate=0.5"))
    path = tmp_path / "out" / "records" / f"{ok['name']}.json"
    before = path.read_bytes()
    monkeypatch.setattr("ptsbench.pipeline.non_finite_parameters", lambda model: ["injected"])
    with pytest.raises(FloatingPointError):
        run(make_cfg(*TINY, "sparsity.rate=0.5", "skip_finished=false", "device=cpu"))
    assert path.read_bytes() == before
    failed = json.loads(path.with_name(f"{ok['name']}.failed.json").read_text())
    assert failed["status"] == "failed" and failed["digest"] == ok["digest"]


def test_write_record_replaces_a_failed_record_with_an_ok_one(tmp_path):
    path = tmp_path / "r.json"
    write_record(path, {"status": "failed", "error": {"message": "x"}})
    write_record(path, {"status": "ok"})
    assert json.loads(path.read_text())["status"] == "ok" and not list(tmp_path.glob("*.failed.json"))


# ---- 8. folders a run writes to are checked at validation ---------------------------------------------------


@pytest.mark.parametrize("knob", ["paths.records_dir", "paths.cache_dir"])
def test_unwritable_output_folders_are_refused_before_any_work(make_cfg, tmp_path, knob):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=knob.replace(".", r"\.")):
        resolve(make_cfg(f"{knob}={tmp_path / 'afile' / 'sub'}"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_records_folder_is_refused(make_cfg, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="not writable"):
        resolve(make_cfg(f"paths.records_dir={ro / 'records'}"))


# ---- 9. parallel workers exit with their parent -------------------------------------------------------------

ORPHAN_SCRIPT = """
import os, sys, time
from joblib import Parallel, delayed
from ptsbench.orphans import exit_with_parent

def job(i):
    exit_with_parent(poll_s=0.2)
    print(os.getpid(), flush=True)
    time.sleep(120)

print("parent", os.getpid(), flush=True)
Parallel(n_jobs=2, backend="loky")(delayed(job)(i) for i in range(2))
"""


def test_loky_workers_exit_when_the_parent_is_killed(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines = [p.stdout.readline().split() for _ in range(3)]
    workers = [int(parts[0]) for parts in lines if parts and parts[0] != "parent"]
    assert len(workers) == 2
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 10
    alive = workers
    while alive and time.time() < deadline:
        alive = [w for w in alive if _running(w)]
        time.sleep(0.2)
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---- 10. ptsbench-models ------------------------------------------------------------------------------------


def test_ptsbench_models_lists_every_model_and_marks_local_checkpoints(capsys):
    from ptsbench.list_models import main, model_configs

    main(["--no-params"])
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert set(rows) == {str(c.name) for c in model_configs()}
    assert "local checkpoint required" in rows["ldm"] and "local checkpoint required" in rows["sd"]
    assert "imagenet" not in rows["zoo_ddpm_digits"] and "mnist5k_gen" in rows["zoo_ddpm_digits"]
    main(["unet"])
    out = capsys.readouterr().out
    assert {ln.split()[0] for ln in out.splitlines()[1:]} == {"zoo_ddpm_digits", "ldm", "sd"}


# ---- 11. task / model / dataset mismatches ------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["task=det"], ("task=det", "model=zoo_resnet20")),
        (["model=zoo_retinanet_digits"], ("task=cls", "model=zoo_retinanet_digits")),
        (["task=gen", "model=zoo_ddpm_digits"], ("task=gen", "dataset=mnist5k")),
        (["task=det", "model=zoo_retinanet_digits"], ("task=det", "dataset=mnist5k")),
    ],
)
def test_task_mismatch_is_a_config_error_naming_both(make_cfg, overrides, names):
    with pytest.raises(ConfigError) as e:
        resolve(make_cfg(*overrides))
    assert all(n in str(e.value) for n in names)


def test_every_model_and_dataset_config_declares_its_tasks():
    for group in ("model", "dataset"):
        for p in sorted((ROOT / "conf" / group).glob("*.yaml")):
            tasks = OmegaConf.load(p).get("tasks")
            assert tasks and set(tasks) <= {"cls", "det", "gen"}, p


# ---- 12. device, checkpoint and cache errors ----------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda:7", "tpu", "mps", "cuda:x"])
def test_unavailable_or_unknown_device_is_refused(make_cfg, device):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(ConfigError, match=f"device={device}"):
        resolve(make_cfg(f"device={device}"))


def test_corrupt_checkpoint_is_a_config_error_naming_the_file(make_cfg, tmp_path):
    (tmp_path / "junk.pt").write_bytes(os.urandom(4096))
    with pytest.raises(ConfigError, match="junk.pt is not a readable checkpoint"):
        run(make_cfg(*TINY, f"model.weights={tmp_path / 'junk.pt'}"))


def test_checkpoint_path_that_is_a_folder_is_refused_at_validation(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        resolve(make_cfg(f"model.weights={tmp_path}"))


def test_corrupt_dense_cache_is_named_and_recomputed(make_cfg, tmp_path, caplog):
    first = run(make_cfg(*TINY, "sparsity.rate=0.5"))
    (cache,) = (tmp_path / "out" / "cache" / "dense").glob("*.json")
    cache.write_text("{truncated")
    with caplog.at_level(logging.WARNING, logger="ptsbench"):
        again = run(make_cfg(*TINY, "sparsity.rate=0.5", "skip_finished=false"))
    assert cache.name in caplog.text and again["dense"] == first["dense"]
    assert json.loads(cache.read_text()) == first["dense"]


def test_unitwise_base_config_is_not_runnable():
    from ptsbench.schemas import check_overrides

    # the CLI checks group options before Hydra composes (Hydra's own miss is a multi-line traceback)
    with pytest.raises(
        ConfigError,
        match=r"reconstruction=_unitwise: no such reconstruction option; valid choices: "
        r"block, layer, none, single, sparsegpt",
    ):
        check_overrides(["model=zoo_resnet20", "reconstruction=single,_unitwise"])
    with pytest.raises(ConfigError, match=r"allocator=ekr: no such allocator option; valid choices: erk, "):
        check_overrides(["allocator=ekr"])
    check_overrides(["reconstruction=single,block", "experiment=null", "+case=embedded_cls", "hydra/launcher=parallel"])
    check_overrides(["reconstruction=mine"], options=False)  # --config-dir / hydra.searchpath: other trees


# ---- 13. messages: where the record went, readable records, aggregate names bad files ------------------------


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


def test_aggregate_names_unreadable_files(tmp_path, capsys):
    from ptsbench.aggregate import aggregate

    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "broken.json").write_text("{trunc")
    aggregate(tmp_path / "records", None, plots=False)
    assert "broken.json" in capsys.readouterr().out
