"""A run on a file-backed dataset is named by the content of the files it reads: the dense-cache key
follows the evaluated split's files and the run digest everything the run reads, so changing images in an
ImageFolder val/ recomputes the dense score under a new digest. The embedded datasets (no files) keep
their digests and cache keys exactly."""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image

from ptsbench.config.spec import identity_of, resolve
from ptsbench.data.file_digest import dataset_digest
from ptsbench.identity import config_digest
from ptsbench.pipeline import run

RUN = (
    "dataset=imagenet",
    "dataset.num_classes=2",
    "dataset.num_workers=0",
    "model=resnet18",
    "model.weights=none",
    "dataset.img_size=32",
)


def image_folder(root):
    for split in ("train", "val"):
        for k, c in enumerate(("cat", "dog")):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.fromarray(np.full((40, 40, 3), 40 * k + i, np.uint8)).save(root / split / c / f"{i}.JPEG")
    return root


def test_an_embedded_dataset_keeps_its_digest(make_cfg):
    spec = resolve(make_cfg("sparsity.rate=0.7"))
    assert spec.identity.data_sha256 is None and spec.identity.eval_data_sha256 is None
    # the digest is the config's alone, as every record written before the data digests computed it
    from ptsbench.config.groups import digest_view

    assert spec.identity.digest == config_digest(digest_view(spec.identity.config))


def test_a_file_backed_dataset_digest_enters_the_run_digest(make_cfg, tmp_path):
    root = image_folder(tmp_path / "data")
    spec = resolve(make_cfg(*RUN, f"dataset.root={root}", "calib.num_samples=2"))
    ds = {"name": "imagenet", "root": str(root), "num_classes": 2}
    assert spec.identity.eval_data_sha256 == dataset_digest(ds)
    assert spec.identity.data_sha256 == dataset_digest(ds, (2, 0))
    from ptsbench.config.groups import digest_view

    plain = config_digest(digest_view(spec.identity.config))
    assert spec.identity.digest == config_digest(digest_view(spec.identity.config), None, dataset_digest(ds, (2, 0)))
    assert spec.identity.digest != plain


def test_changed_val_images_recompute_the_dense_score_under_a_new_digest(make_cfg, tmp_path):
    root = image_folder(tmp_path / "data")
    args = (*RUN, f"dataset.root={root}", "calib.num_samples=2", "sparsity.rate=0.5")
    first = run(make_cfg(*args))
    shutil.move(root / "val" / "dog" / "1.JPEG", root / "val" / "cat" / "moved.JPEG")  # a dog becomes a cat
    second = run(make_cfg(*args))
    assert second["digest"] != first["digest"] and not second.get("skipped")
    assert second["data"]["eval_sha256"] != first["data"]["eval_sha256"]
    fresh = run(make_cfg(*args, "eval.dense_cache=false", f"paths.cache_dir={tmp_path / 'fresh'}"))
    assert second["dense"] == fresh["dense"]  # from the files as they are now, not the cache of the old ones
    cached = sorted((tmp_path / "out" / "cache" / "dense").glob("*.json"))
    assert len(cached) == 2  # one dense score per content of val/


def test_an_untouched_dataset_keeps_its_digest_and_is_skipped_as_finished(make_cfg, tmp_path):
    root = image_folder(tmp_path / "data")
    args = (*RUN, f"dataset.root={root}", "calib.num_samples=2", "sparsity.rate=0.5")
    first = run(make_cfg(*args))
    again = run(make_cfg(*args))
    assert again["digest"] == first["digest"] and again.get("skipped")


def test_a_plan_before_the_data_exists_names_the_run_without_a_data_digest(make_cfg, tmp_path):
    ident = identity_of(make_cfg(*RUN, f"dataset.root={tmp_path / 'not_yet'}"))
    assert ident.data_sha256 is None and ident.digest


def test_the_record_carries_the_data_digests(make_cfg, tmp_path):
    root = image_folder(tmp_path / "data")
    rec = run(make_cfg(*RUN, f"dataset.root={root}", "calib.num_samples=2", "sparsity.rate=0.5"))
    written = json.loads(next((tmp_path / "out" / "records").glob("*.json")).read_text())
    assert written["data"] == rec["data"] and set(rec["data"]) == {"eval_sha256", "run_sha256"}
    assert all(len(v) == 64 for v in rec["data"].values())


def test_an_embedded_record_carries_no_data_section(make_cfg):
    rec = run(make_cfg("dataset.num_test=100", "calib.num_samples=32", "eval.batch_size=100"))
    assert rec["status"] == "ok" and "data" not in rec
