"""Feature networks for Fréchet distances of the GEN task (images in [0, 1] -> (N, D) features).

- ``fid``: Inception-v3 pool3 features (2048-d), the FID network of Heusel et al. 2017; where its weights
  come from and how they are read without running anything: :mod:`ptsbench.tasks.fid_inception`.
- ``fid_digits`` (embedded benchmark, docs/methods.md#tasks-and-metrics): the 64-d penultimate features (after global
  pooling, before ``fc``) of the zoo's CIFAR-ResNet-20 trained on MNIST-5k. Images are turned
  grey (channel mean) and resized to 28x28 first. Not comparable with FID; never called FID.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .fid_inception import DIGEST_CHARS, FEATURE_DIM, InceptionWeights, build_inception, resolve_inception_weights

DIGIT_ARCH = "cifar_resnet20"


class InceptionFeatures:
    dim = FEATURE_DIM

    def __init__(self, weights: InceptionWeights, device: torch.device):
        from ..file_hashes import sha256_file

        self.net = build_inception(weights).eval().to(device)
        self.device = device
        # which network scored the run, in its metrics: the source and a content digest of the file
        self.meta = {"inception": weights.source, "inception_sha256": sha256_file(weights.path)[:DIGEST_CHARS]}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch: int = 100) -> torch.Tensor:
        out = []
        for start in range(0, len(images), batch):
            x = images[start : start + batch]
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            (features,) = self.net((x * 255).round().clamp(0, 255).byte().to(self.device))
            out.append(features.float().cpu())
        return torch.cat(out)


class DigitFeatures:
    dim = 64

    def __init__(self, device: torch.device):
        from ..data.embedded import MNIST_MEAN, MNIST_STD
        from ..models import zoo, zoo_checkpoint_path
        from ..safe_load import read_state_dict

        path = zoo_checkpoint_path(DIGIT_ARCH, "mnist5k")
        if not path.is_file():
            raise ConfigError(
                f"metric fid_digits needs the zoo digit classifier at {path}; train it with "
                f"`python scripts/train_zoo.py --only {DIGIT_ARCH}`"
            )
        net = zoo.ZOO_ARCHS.get(DIGIT_ARCH)(10, 1, 28)
        net.load_state_dict(read_state_dict(path, "metric fid_digits"))
        net.fc = nn.Identity()  # penultimate features
        self.net, self.device = net.eval().to(device), device
        self.mean, self.std = MNIST_MEAN, MNIST_STD

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
        out = []
        for start in range(0, len(images), batch):
            x = images[start : start + batch].float()
            x = x.mean(1, keepdim=True) if x.shape[1] > 1 else x
            if x.shape[-2:] != (28, 28):
                x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
            out.append(self.net(((x - self.mean) / self.std).to(self.device)).float().cpu())
        return torch.cat(out)


def build_features(metric: str, device: torch.device, inception_weights: InceptionWeights | None = None):
    if metric == "fid":
        return InceptionFeatures(inception_weights or resolve_inception_weights(None), device)
    if metric == "fid_digits":
        return DigitFeatures(device)
    raise ConfigError(f"task.metric='{metric}' for task=gen; valid choices: fid, fid_digits")


def to_size(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Real images brought to the generated resolution, so both sides share one feature path."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images.float(), size=tuple(size), mode="bilinear", antialias=True, align_corners=False).clamp(
        0, 1
    )
