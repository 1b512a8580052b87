"""Pieces shared by the real image datasets (ImageNet, CIFAR): uint8 images, normalised late.

Every sample is first a uint8 CHW tensor after the geometric part of the eval transform (resize
the short side, center-crop: what the model's weights were measured with, see
:class:`EvalPreprocess`, chosen by ``models.library.eval_preprocess``); normalisation to float happens per batch.
That split is what makes the evaluation cache possible: the preprocessed evaluation set is
written once as a uint8 ``.npy`` (``dataset.eval_cache: true``, under ``paths.cache_dir``) and
memory-mapped by every later run of a sweep, so JPEGs are decoded once instead of once per run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sized
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from ..errors import ConfigError
from .base import DataBundle

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EvalPreprocess:
    """Eval transform of an image classifier: resize the short side, center-crop, normalise."""

    crop_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def at_crop(self, crop_size: int | None) -> EvalPreprocess:
        """The same transform at another crop size, keeping the crop/resize ratio."""
        if not crop_size or int(crop_size) == self.crop_size:
            return self
        ratio = self.crop_size / self.resize_size
        return replace(self, crop_size=int(crop_size), resize_size=int(math.floor(int(crop_size) / ratio)))


class UnreadableImage(ConfigError):
    """An image file PIL cannot decode (truncated, not an image, gone), named in one line.

    A DataLoader worker's exception reaches the main process as ``type(e)(<the worker's traceback
    text>)``; that text ends with this error's own line, which is all that is kept."""

    def __init__(self, message: str):
        lines = [ln for ln in str(message).splitlines() if ln.strip()]
        super().__init__(lines[-1].split(": ", 1)[-1] if len(lines) > 1 else message)


def read_image(path, knob: str = "dataset.root"):
    """The image at ``path`` decoded as an RGB ``PIL.Image``, or an UnreadableImage naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # decodes now: a truncated file fails here, not later
    except (OSError, SyntaxError, ValueError) as e:  # PIL's ways of saying "cannot decode"
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UnreadableImage(f"{knob}: {path} is not a readable image ({detail}); replace or remove it") from None


class ImageFiles(Dataset):
    """(path, label) samples decoded with PIL and cropped to uint8 tensors."""

    def __init__(self, samples: list[tuple[str, int]], preprocess):
        from torchvision import transforms as T

        self.samples = samples
        interp = T.InterpolationMode(preprocess.interpolation)
        self.transform = T.Compose(
            [
                T.Resize(preprocess.resize_size, interpolation=interp),
                T.CenterCrop(preprocess.crop_size),
                T.PILToTensor(),
            ]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return self.transform(read_image(path)), label


class Uint8Images(Dataset):
    """uint8 images (N, C, H, W) held in memory or memory-mapped, with labels; an optional
    square ``resize`` (bilinear, antialiased) is applied per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, resize: int | None = None):
        self.images, self.labels, self.resize = images, labels, resize

    def __len__(self) -> int:
        return len(self.labels)

    def _resized(self, x: torch.Tensor) -> torch.Tensor:
        if not self.resize or x.shape[-1] == self.resize:
            return x
        x = torch.nn.functional.interpolate(
            x.float(), size=(self.resize, self.resize), mode="bilinear", antialias=True, align_corners=False
        )
        return x.round_().clamp_(0, 255).byte()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self._resized(torch.from_numpy(np.array(self.images[i : i + 1])))[0], int(self.labels[i])

    def get_batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Many samples in one read: one copy out of the memory map (a slice when consecutive)."""
        idx = np.asarray(indices, dtype=np.int64)
        consecutive = len(idx) > 0 and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))
        rows = self.images[idx[0] : idx[0] + len(idx)] if consecutive else self.images[idx]
        return self._resized(torch.from_numpy(np.array(rows))), torch.from_numpy(self.labels[idx])


class Normalized(Dataset):
    """float images (x / 255 - mean) / std from a uint8 dataset; a list of indices gives a whole
    batch, read and normalised in one tensor operation."""

    def __init__(self, source: Dataset, mean, std):
        self.source = source
        # (x / 255 - mean) / std == (x - 255 mean) * (1 / (255 std)): two in-place passes
        self.shift = 255.0 * torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def __len__(self) -> int:
        return len(cast(Sized, self.source))  # torch's Dataset declares no __len__; ours all have one

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().sub_(self.shift).mul_(self.scale)

    def __getitem__(self, i):
        """One sample for an int; a whole collated batch (x, y) for a list of indices (what a
        DataLoader with a BatchSampler and ``batch_size=None`` asks for)."""
        if isinstance(i, (list, tuple)):
            return self.batch(i)
        x, y = self.source[i]
        return self.normalize(x), y

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self.source, "get_batch"):
            x, y = self.source.get_batch(indices)
        else:
            items = [self.source[i] for i in indices]
            x, y = torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])
        return self.normalize(x), y


@dataclass
class ImageBundle(DataBundle):
    """A DataBundle whose test loader reads whole batches, decoding with ``loader_workers`` processes."""

    loader_workers: int = 0

    def test_loader(self, batch_size: int, num_workers: int | None = None) -> DataLoader:
        workers = self.loader_workers if num_workers is None else num_workers
        if isinstance(self.test, Normalized):  # whole batches: one read, one normalisation, no re-stacking
            batches = BatchSampler(SequentialSampler(self.test), batch_size, drop_last=False)
            return DataLoader(self.test, sampler=batches, batch_size=None, num_workers=workers)
        return DataLoader(self.test, batch_size=batch_size, shuffle=False, num_workers=workers)


def stack_uint8(source: Dataset, indices, num_workers: int = 0, batch_size: int = 64) -> torch.Tensor:
    """The uint8 images ``source[i]`` for ``indices``, stacked (N, C, H, W)."""
    subset = torch.utils.data.Subset(source, [int(i) for i in indices])
    loader = DataLoader(subset, batch_size=batch_size, num_workers=num_workers)
    return torch.cat([x for x, _ in loader]) if len(subset) else torch.empty(0, dtype=torch.uint8)


def files_digest(samples: list[tuple[str, int]], root: Path, extra: dict) -> str:
    """Identity of a file list (relative path, size, label) and its preprocessing."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for path, label in samples:
        h.update(f"{os.path.relpath(path, root)}\t{os.path.getsize(path)}\t{label}\n".encode())
    return h.hexdigest()[:20]


def cached_uint8(source: ImageFiles, cache_file: Path, num_workers: int = 0, batch_size: int = 64) -> Uint8Images:
    """``source`` decoded once into ``cache_file`` (uint8 .npy + labels), then memory-mapped.

    Written chunk by chunk into a memory-mapped temp file and renamed when complete, so a
    crashed or concurrent writer never leaves a half cache that a later run would trust."""
    labels_file = cache_file.with_suffix(".labels.npy")
    if not cache_file.exists():  # written last: its presence means both files are complete
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        first, _ = source[0]
        tmp = cache_file.with_name(f"{cache_file.stem}.{os.getpid()}.tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(source), *first.shape))
        loader = DataLoader(source, batch_size=batch_size, num_workers=num_workers)
        start, labels = 0, []
        for x, y in loader:
            out[start : start + len(x)] = x.numpy()
            start += len(x)
            labels.append(y)
        out.flush()
        del out
        tmp_labels = labels_file.with_name(f"{labels_file.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp_labels, torch.cat(labels).numpy().astype(np.int64))
        os.replace(tmp_labels, labels_file)
        os.replace(tmp, cache_file)
    return Uint8Images(np.load(cache_file, mmap_mode="r"), np.load(labels_file))
