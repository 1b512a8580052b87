"""fashion5k: Fashion-MNIST's IDX files read exactly, 500 per class picked in file order, the mnist5k
split, and clear errors for a missing folder, a wrong file and an unset test size."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from ptsbench.data import build_data
from ptsbench.data.fashion import DEBIAN_ROOT, FILES, first_per_class, load_fashion5k_arrays, read_idx, write_packaged
from ptsbench.errors import ConfigError

CALIB = {"num_samples": 16, "seed": 0}


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def fake_root(tmp_path):
    """600 images per class, class = index % 10, pixel value encodes the index (mod 256)."""
    n = 6000
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = (np.arange(n)[:, None, None] % 256 * np.ones((1, 28, 28))).astype(np.uint8)
    write_idx(tmp_path / FILES[0], images)
    write_idx(tmp_path / FILES[1], labels)
    return tmp_path, images, labels


def test_read_idx_round_trips_shape_and_values(tmp_path):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)


def test_read_idx_refuses_a_file_that_is_not_ubyte_idx(tmp_path):
    (tmp_path / "b.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + struct.pack(">i", 1) + b"\x00" * 4))
    with pytest.raises(ConfigError, match="not an unsigned-byte IDX file"):
        read_idx(tmp_path / "b.gz")


def test_first_per_class_takes_the_first_items_of_each_class_in_file_order():
    labels = np.array([2, 0, 1, 0, 2, 1, 0, 1, 2])
    assert first_per_class(labels, 2).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ConfigError, match="fewer than 4 images of class"):
        first_per_class(labels, 4)


def test_fashion5k_is_500_per_class_split_like_mnist5k(fake_root):
    root, images, labels = fake_root
    x, y = load_fashion5k_arrays(str(root))
    assert x.shape == (5000, 1, 28, 28) and np.bincount(y).tolist() == [500] * 10
    # class = index % 10, so the first 500 of each class are the first 5,000 images
    assert np.array_equal(x[:, 0, 0, 0], (np.arange(5000) % 256).astype(np.float32) / 255.0)
    data = build_data(OmegaConf.create({"name": "fashion5k", "root": str(root), "num_test": 1000}), CALIB)
    mnist = build_data(OmegaConf.create({"name": "mnist5k", "num_test": 1000}), CALIB)
    assert len(data.test) == 1000 and len(data.train) == 4000 and data.calib_inputs.shape == (16, 1, 28, 28)
    assert data.meta["test_indices_digest"] == mnist.meta["test_indices_digest"]
    assert data.meta["calib_indices_digest"] == mnist.meta["calib_indices_digest"]


def test_missing_files_name_the_knob_and_the_debian_package(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.root=.*apt-get install dataset-fashion-mnist"):
        build_data(OmegaConf.create({"name": "fashion5k", "root": str(tmp_path), "num_test": 1000}), CALIB)


def test_an_unset_test_size_is_refused_instead_of_testing_on_the_training_images():
    with pytest.raises(ConfigError, match="dataset.num_test is unset"):
        build_data(OmegaConf.create({"name": "mnist5k"}), CALIB)


def test_the_packaged_copy_is_the_default_500_per_class_in_zalandos_order():
    x, y = load_fashion5k_arrays(None)
    assert x.shape == (5000, 1, 28, 28) and np.bincount(y).tolist() == [500] * 10
    # Fashion-MNIST's t10k labels start 9, 2, 1, 1, 6 (ankle boot, pullover, trouser, trouser, shirt)
    assert y[:5].tolist() == [9, 2, 1, 1, 6]
    data = build_data(OmegaConf.create({"name": "fashion5k", "num_test": 1000}), CALIB)
    assert len(data.test) == 1000 and data.meta["test_indices_digest"] == "ffc181a9c0bced23"


@pytest.mark.skipif(
    not all((Path(DEBIAN_ROOT) / f).is_file() for f in FILES),
    reason="Debian's Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_the_packaged_copy_equals_the_picks_from_the_official_files(tmp_path):
    packaged, official = load_fashion5k_arrays(None), load_fashion5k_arrays(DEBIAN_ROOT)
    assert np.array_equal(packaged[0], official[0]) and np.array_equal(packaged[1], official[1])
    write_packaged(DEBIAN_ROOT, tmp_path)  # byte for byte: the shipped files are what write_packaged makes
    shipped = Path(__file__).resolve().parents[1] / "src" / "ptsbench" / "data" / "fashion5k"
    for f in tmp_path.iterdir():
        assert f.read_bytes() == (shipped / f.name).read_bytes()
