"""Results follow content: weight hashes, dataset file digests and zoo weights by hash.

- A weight file copied over the old one and touched back to the old size and mtime is hashed again
  (the remembered hash is keyed by inode and change time too), and an untouched file is not re-read.
- ``dataset_digest`` changes when one val/ image is replaced (also by a same-size copy with the old
  mtime), stays when nothing changed, and covers the calibration images only when asked.
- The shipped zoo checkpoint passed by path is recognised by its SHA-256, so it gets the same split
  refusal as ``model.weights=zoo``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest
import torch

from ptsbench import file_hashes
from ptsbench.config.spec import resolve as validate_config
from ptsbench.data.file_digest import dataset_digest, dataset_files
from ptsbench.errors import ConfigError
from ptsbench.models import zoo_checkpoint_path
from ptsbench.models.fingerprint import weights_sha256
from ptsbench.models.zoo_files import zoo_checkpoint_of


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def count_reads(monkeypatch):
    """Counts the files actually hashed (read) through ptsbench.file_hashes."""
    reads: list[str] = []
    real = file_hashes.sha256_file

    def counting(path):
        reads.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(file_hashes, "sha256_file", counting)
    return reads


# ---- weights ---------------------------------------------------------------------------------------------


def test_copy_over_and_touch_back_to_the_old_mtime_is_hashed_again(tmp_path):
    w, b, cache = tmp_path / "w.pt", tmp_path / "B.pt", tmp_path / "cache"
    w.write_bytes(b"A" * 4096)
    b.write_bytes(b"B" * 4096)
    assert weights_sha256(w, cache) == _sha(b"A" * 4096)
    before = os.stat(w)
    time.sleep(0.02)  # past a coarse-timestamp kernel's tick (4-10 ms), as a user's cp always is
    shutil.copyfile(b, w)  # cp B.pt w.pt
    os.utime(w, ns=(before.st_atime_ns, before.st_mtime_ns))  # touch -d '<old time>' w.pt
    after = os.stat(w)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)  # the old key is forged
    assert weights_sha256(w, cache) == _sha(b"B" * 4096)


def test_an_untouched_weight_file_is_not_read_again(tmp_path, count_reads):
    w, cache = tmp_path / "w.pt", tmp_path / "cache"
    w.write_bytes(b"x" * 100)
    assert weights_sha256(w, cache) == weights_sha256(w, cache) == _sha(b"x" * 100)
    assert count_reads == ["w.pt"]
    entry = json.loads((cache / "weights_sha256.json").read_text())[str(w.resolve())]
    st = os.stat(w)
    assert entry["signature"] == f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def test_a_folder_digest_is_names_and_content_hashes(tmp_path):
    (tmp_path / "pipe" / "unet").mkdir(parents=True)
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    (tmp_path / "pipe" / "unet" / "w.bin").write_bytes(b"\x00\x01")
    want = _sha(f"model_index.json\t{_sha(b'{}')}\nunet/w.bin\t{_sha(bytes([0, 1]))}\n".encode())
    assert weights_sha256(tmp_path / "pipe", tmp_path / "cache") == want


def test_a_file_rewritten_while_hashed_is_hashed_again_and_its_first_hash_not_kept(tmp_path, monkeypatch):
    w = tmp_path / "w.bin"
    w.write_bytes(b"old!")
    real, calls = file_hashes.sha256_file, []

    def rewriting(path):
        digest = real(path)
        if not calls:
            w.write_bytes(b"new!")  # lands while the first hash is taken
        calls.append(digest)
        return digest

    monkeypatch.setattr(file_hashes, "sha256_file", rewriting)
    index = file_hashes.HashIndex(tmp_path / "index.json")
    assert index.sha256(w) == _sha(b"new!") and calls == [_sha(b"old!"), _sha(b"new!")]


# ---- dataset files ---------------------------------------------------------------------------------------


def _folder(root, classes=("cat", "dog"), per_class=2):
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (root / split / c / f"{c}{i}.JPEG").write_bytes(f"{split}/{c}/{i}".encode().ljust(64, b"."))
    return {"name": "imagenet", "root": str(root), "num_classes": len(classes)}


def test_replacing_one_val_image_changes_the_digest_touching_nothing_keeps_it(tmp_path, count_reads):
    ds, cache = _folder(tmp_path / "in"), tmp_path / "cache"
    first = dataset_digest(ds, cache_dir=cache)
    assert dataset_digest(ds, cache_dir=cache) == first
    assert sorted(count_reads) == sorted(["cat0.JPEG", "cat1.JPEG", "dog0.JPEG", "dog1.JPEG"])  # val once
    target = tmp_path / "in" / "val" / "dog" / "dog1.JPEG"
    old = os.stat(target)
    time.sleep(0.02)  # past a coarse-timestamp kernel's tick
    target.write_bytes(b"another image".ljust(64, b"."))  # same size
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))  # and the old mtime
    second = dataset_digest(ds, cache_dir=cache)
    assert second != first and count_reads[-1] == "dog1.JPEG" and len(count_reads) == 5


def test_the_digest_is_names_labels_and_bytes_in_reading_order(tmp_path):
    ds = _folder(tmp_path / "in")
    lines = "".join(
        f"test\tval/{c}/{c}{i}.JPEG\t{label}\t{_sha(f'val/{c}/{i}'.encode().ljust(64, b'.'))}\n"
        for label, c in enumerate(("cat", "dog"))
        for i in range(2)
    )
    assert dataset_digest(ds) == _sha(lines.encode())  # no cache_dir: hashed, nothing remembered
    shutil.copytree(tmp_path / "in", tmp_path / "elsewhere")
    assert dataset_digest({**ds, "root": str(tmp_path / "elsewhere")}) == _sha(lines.encode())  # machine-free


def test_calibration_images_enter_only_when_asked_and_only_those_drawn(tmp_path):
    ds = _folder(tmp_path / "in", per_class=4)
    calib = (2, 0)
    drawn = [p for role, p, _ in dataset_files(ds, calib) if role == "calib"]
    assert len(drawn) == 2 and all("train" in p.parts for p in drawn)
    with_calib, without = dataset_digest(ds, calib), dataset_digest(ds)
    assert with_calib != without
    train = sorted((tmp_path / "in" / "train").rglob("*.JPEG"))
    unused = next(p for p in train if p not in drawn)
    unused.write_bytes(b"changed".ljust(64, b"."))
    assert dataset_digest(ds, calib) == with_calib and dataset_digest(ds) == without
    drawn[0].write_bytes(b"changed".ljust(64, b"."))
    assert dataset_digest(ds, calib) != with_calib and dataset_digest(ds) == without


def test_cifar_lsun_and_any_root_are_digested(tmp_path):
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (cifar / f).write_bytes(f.encode())
    ds = {"name": "cifar10", "root": str(tmp_path / "cifar")}
    assert [p.name for _, p, _ in dataset_files(ds)] == ["test_batch"]
    assert len(dataset_files(ds, (4, 0))) == 6
    before = dataset_digest(ds)
    (cifar / "test_batch").write_bytes(b"other")
    assert dataset_digest(ds) != before
    lsun = tmp_path / "lsun"
    (lsun / "a").mkdir(parents=True)
    for name in ("a/2.png", "1.jpg", "notes.txt"):
        (lsun / name).write_bytes(name.encode())
    files = dataset_files({"name": "lsun_churches", "root": str(lsun), "max_images": 0})
    assert [p.name for _, p, _ in files] == ["1.jpg", "2.png"]  # images only, sorted paths
    assert [p.name for _, p, _ in dataset_files({"name": "my_set", "root": str(lsun)})] == [
        "1.jpg",
        "2.png",
        "notes.txt",
    ]
    assert dataset_digest({"name": "mnist5k", "num_test": 1000}) is None


def test_coco_digest_covers_the_annotations_and_the_first_num_test_images(tmp_path):
    root = tmp_path / "coco"
    for d in ("val2017", "train2017", "annotations"):
        (root / d).mkdir(parents=True)
    for i in (1, 2, 3):
        (root / "val2017" / f"{i}.jpg").write_bytes(bytes([i]))
    images = [{"id": i, "file_name": f"{i}.jpg"} for i in (3, 1, 2)]
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps({"images": images}))
    files = dataset_files({"name": "coco2017", "root": str(root), "num_test": 2})
    assert [p.name for _, p, _ in files] == ["instances_val2017.json", "1.jpg", "2.jpg"]


def test_voc_digest_covers_the_split_list_annotations_images_and_drawn_calibration(tmp_path):
    year = tmp_path / "VOCdevkit" / "VOC2007"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / d).mkdir(parents=True)
    for i in ("000001", "000002", "000005"):
        (year / "Annotations" / f"{i}.xml").write_text(f"<annotation>{i}</annotation>")
        (year / "JPEGImages" / f"{i}.jpg").write_bytes(i.encode())
    (year / "ImageSets/Main/test.txt").write_text("000001\n000005\n")
    (year / "ImageSets/Main/trainval.txt").write_text("000002\n")
    ds = {"name": "voc07", "root": str(tmp_path)}
    names = [(role, p.name) for role, p, _ in dataset_files(ds, (4, 0))]
    assert names == [
        ("test", "test.txt"),
        ("test", "000001.xml"),
        ("test", "000001.jpg"),
        ("test", "000005.xml"),
        ("test", "000005.jpg"),
        ("calib", "000002.jpg"),
    ]
    before = dataset_digest(ds)
    (year / "Annotations" / "000005.xml").write_text("<annotation>moved box</annotation>")
    assert dataset_digest(ds) != before


# ---- zoo weights by hash ---------------------------------------------------------------------------------


def test_the_shipped_zoo_checkpoint_is_recognised_by_content(tmp_path):
    zoo = zoo_checkpoint_path("cifar_resnet20", "mnist5k")
    assert zoo_checkpoint_of(zoo) == ("cifar_resnet20", "mnist5k")
    copy = tmp_path / "renamed.pt"
    shutil.copyfile(zoo, copy)
    assert zoo_checkpoint_of(copy) == ("cifar_resnet20", "mnist5k")
    state = torch.load(zoo, map_location="cpu", weights_only=True)
    state["fc.bias"] += 1.0
    torch.save(state, copy)
    assert zoo_checkpoint_of(copy) is None


@pytest.mark.parametrize("how", ["path", "copy"])
def test_zoo_weights_by_path_get_the_zoo_split_refusal(make_cfg, tmp_path, how):
    zoo = zoo_checkpoint_path("cifar_resnet20", "mnist5k")
    path = zoo if how == "path" else shutil.copyfile(zoo, tmp_path / "mine.pt")
    with pytest.raises(ConfigError, match=r"dataset.split_seed=1: the weights in model.weights=.* \(the zoo "):
        validate_config(make_cfg(f"model.weights={path}", "dataset.split_seed=1"))
    with pytest.raises(ConfigError, match=r"dataset.split_seed=1: the zoo checkpoints \(model.weights=zoo\)"):
        validate_config(make_cfg("model.weights=zoo", "dataset.split_seed=1"))
    torch.save({k: v + 1 for k, v in torch.load(zoo, weights_only=True).items()}, tmp_path / "own.pt")
    validate_config(make_cfg(f"model.weights={tmp_path / 'own.pt'}", "dataset.split_seed=1"))  # other bytes: fine
