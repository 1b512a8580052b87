"""Real datasets from local paths (docs/methods.md#tasks-and-metrics): ImageNet ImageFolder, CIFAR-10/100 pickles.

Tiny generated copies of each layout go through the real loaders: labels, the model's eval
transform recomputed by hand, calibration draws, the uint8 evaluation cache, the errors that
tell a user how to point at the data, and one CLI run on a generated ImageNet folder.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from ptsbench.config.spec import resolve
from ptsbench.data import build_data
from ptsbench.data.imagenet import class_to_index
from ptsbench.errors import ConfigError
from ptsbench.models.library import eval_preprocess

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
WNIDS = ("n01440764", "n15075141")  # the first and the last ImageNet-1K class: labels 0 and 999


def make_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for wnid in WNIDS:
            (root / split / wnid).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(40, 64, size=2)
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{wnid}_{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imagenet"), {"train": 6, "val": 3})


def imagenet_cfg(root, **extra):
    return OmegaConf.merge(
        OmegaConf.load(CONF / "dataset" / "imagenet.yaml"), {"root": str(root), "num_workers": 0, **extra}
    )


def model_cfg(name: str):
    cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    cfg.weights = "none"
    return cfg


CALIB = OmegaConf.create({"num_samples": 5, "seed": 3})


def test_eval_transform_is_the_one_of_the_weights():
    r18 = eval_preprocess(model_cfg("resnet18"))
    assert (r18.crop_size, r18.resize_size, r18.interpolation) == (224, 256, "bilinear")
    assert eval_preprocess(model_cfg("shufflenetv2_x1.5")).resize_size == 232  # torchvision's recipe
    vit = eval_preprocess(model_cfg("vit_b16"))
    assert (vit.crop_size, vit.resize_size, vit.interpolation, vit.mean) == (224, 248, "bicubic", (0.5, 0.5, 0.5))
    assert eval_preprocess(model_cfg("regnetx_200m")).resize_size == 256  # timm crop_pct 0.875
    assert r18.at_crop(32).resize_size == 36  # forced crop keeps the 224/256 ratio


def test_imagenet_folder_loads_with_wnid_labels_and_the_model_transform(imagenet_root):
    data = build_data(
        imagenet_cfg(imagenet_root, img_size=32), CALIB, preprocess=eval_preprocess(model_cfg("resnet18"))
    )
    assert (data.num_classes, data.in_chans, data.img_size, len(data.test)) == (1000, 3, 32, 6)
    assert sorted({y for _, y in data.test}) == [0, 999]
    # recompute one val image by hand: resize short side to 36, center-crop 32, normalise
    x, y = data.test[5]
    img = Image.open(imagenet_root / "val" / WNIDS[1] / f"{WNIDS[1]}_2.JPEG").convert("RGB")
    w, h = img.size
    img = img.resize((36, round(36 * h / w)) if w < h else (round(36 * w / h), 36), Image.BILINEAR)
    left, top = round((img.size[0] - 32) / 2.0), round((img.size[1] - 32) / 2.0)
    ref = torch.from_numpy(np.array(img.crop((left, top, left + 32, top + 32)))).permute(2, 0, 1).float() / 255
    ref = (ref - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    assert y == 999 and x.shape == (3, 32, 32)
    assert (x - ref).abs().max() < 0.05  # PIL's and torchvision's antialiased resize round differently
    # calibration: 5 training images drawn with the seed, preprocessed like the test split
    assert data.calib_inputs.shape == (5, 3, 32, 32) and data.calib_inputs.dtype == torch.float32
    again = build_data(
        imagenet_cfg(imagenet_root, img_size=32), CALIB, preprocess=eval_preprocess(model_cfg("resnet18"))
    )
    assert np.array_equal(again.calib_indices, data.calib_indices)
    assert torch.equal(data.calib_inputs[2], data.train[int(data.calib_indices[2])][0])


def test_non_wordnet_class_folders_take_their_sorted_position():
    assert class_to_index(["dog", "cat"], 1000) == {"cat": 0, "dog": 1}
    with pytest.raises(ConfigError, match="3 class folders but dataset.num_classes=2"):
        class_to_index(["a", "b", "c"], 2)


def test_eval_cache_is_written_once_and_gives_identical_batches(imagenet_root, tmp_path):
    plain = build_data(
        imagenet_cfg(imagenet_root, img_size=32), CALIB, preprocess=eval_preprocess(model_cfg("deit_ti"))
    )
    cached = build_data(
        imagenet_cfg(imagenet_root, img_size=32, eval_cache=True),
        CALIB,
        preprocess=eval_preprocess(model_cfg("deit_ti")),
        cache_dir=tmp_path,
    )
    files = list((tmp_path / "eval").glob("imagenet-val-*.npy"))
    assert len(files) == 2 and cached.meta["eval_cache"] in map(str, files)  # images + labels
    cache_file = Path(cached.meta["eval_cache"])
    mtime = cache_file.stat().st_mtime_ns
    reused = build_data(
        imagenet_cfg(imagenet_root, img_size=32, eval_cache=True),
        CALIB,
        preprocess=eval_preprocess(model_cfg("deit_ti")),
        cache_dir=tmp_path,
    )
    assert reused.meta["eval_cache"] == str(cache_file) and cache_file.stat().st_mtime_ns == mtime
    for (xa, ya), (xb, yb) in zip(plain.test_loader(4), reused.test_loader(4)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = build_data(
        imagenet_cfg(imagenet_root, img_size=40, eval_cache=True),
        CALIB,
        preprocess=eval_preprocess(model_cfg("deit_ti")),
        cache_dir=tmp_path,
    )
    assert other.meta["eval_cache"] != str(cache_file)  # another transform, another cache


def write_cifar(root: Path, name: str, per_file: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder, files, key, classes = {
        "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels", 10),
        "cifar100": ("cifar-100-python", ["train", "test"], "fine_labels", 100),
    }[name]
    (root / folder).mkdir(parents=True)
    for f in files:
        entry = {
            "data": rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8),
            key: rng.integers(0, classes, size=per_file).tolist(),
            "batch_label": f,
        }
        with open(root / folder / f, "wb") as fh:
            pickle.dump(entry, fh)
    return root / folder


@pytest.mark.parametrize("name,num_train,num_classes", [("cifar10", 5 * 8, 10), ("cifar100", 8, 100)])
def test_cifar_pickles_load_through_the_real_loader(tmp_path, name, num_train, num_classes):
    folder = write_cifar(tmp_path, name, per_file=8)
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "dataset" / f"{name}.yaml"), {"root": str(tmp_path)})
    data = build_data(cfg, CALIB)
    assert (data.num_classes, data.img_size, len(data.train), len(data.test)) == (num_classes, 32, num_train, 8)
    test_file = "test_batch" if name == "cifar10" else "test"
    with open(folder / test_file, "rb") as fh:
        raw = pickle.load(fh)
    x, y = data.test[3]
    ref = torch.from_numpy(raw["data"][3].reshape(3, 32, 32)).float() / 255
    ref = (ref - torch.tensor(list(cfg.mean)).view(3, 1, 1)) / torch.tensor(list(cfg.std)).view(3, 1, 1)
    assert torch.allclose(x, ref, atol=1e-6) and y == raw["fine_labels" if name == "cifar100" else "labels"][3]
    assert data.calib_inputs.shape == (5, 3, 32, 32)
    # root may also be the batches folder itself; img_size resizes
    bigger = build_data(OmegaConf.merge(cfg, {"root": str(folder), "img_size": 40}), CALIB)
    assert bigger.test[0][0].shape == (3, 40, 40) and bigger.calib_inputs.shape == (5, 3, 40, 40)


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def test_unset_dataset_root_says_how_to_point_at_the_data():
    with pytest.raises(ConfigError, match=r"dataset.root is required: .*dataset.root=/data/imagenet"):
        resolve(compose("model=resnet18", "model.weights=none", "dataset=imagenet"))


def test_wrong_dataset_roots_name_the_expected_layout(tmp_path, imagenet_root):
    with pytest.raises(ConfigError, match=r"dataset.root='/no/such/imagenet' does not exist.*<root>/val/<class>"):
        resolve(compose("model=resnet18", "model.weights=none", "dataset=imagenet", "dataset.root=/no/such/imagenet"))
    (tmp_path / "only_train" / "train" / "n01440764").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"has no val/ folder of class subfolders"):
        resolve(
            compose(
                "model=resnet18", "model.weights=none", "dataset=imagenet", f"dataset.root={tmp_path / 'only_train'}"
            )
        )
    with pytest.raises(
        ConfigError, match=r"does not hold the cifar10 batch files; expected <root>/cifar-10-batches-py/"
    ):
        resolve(compose("model=cifar_resnet32", "model.weights=none", "dataset=cifar10", f"dataset.root={tmp_path}"))


@pytest.mark.slow  # a CLI subprocess (Python + Hydra + torch start-up) or a sweep
def test_cli_runs_resnet18_on_a_generated_imagenet_folder(imagenet_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptsbench.run",
            "model=resnet18",
            "dataset=imagenet",
            f"dataset.root={imagenet_root}",
            "model.weights=none",
            "dataset.img_size=32",
            "dataset.num_workers=0",
            "calib.num_samples=4",
            "allocator=erk",
            "sparsity.rate=0.6",
            "device=cpu",
            f"paths.output_dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "records").glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "ok" and rec["choices"]["model"] == "resnet18" and rec["choices"]["dataset"] == "imagenet"
    assert rec["model"]["family"] == "resnet" and rec["calibration"]["num_samples"] == 4
    sp = rec["sparsity"]
    assert abs(sp["zeros"] - int(0.6 * sp["total"])) <= len(sp["target_per_layer"])
    assert 0.0 <= rec["dense"]["top1"] <= 1.0 and 0.0 <= rec["sparse"]["top1"] <= 1.0
