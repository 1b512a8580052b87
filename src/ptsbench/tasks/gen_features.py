"""Feature networks for Fréchet distances of the GEN task (images in [0, 1] -> (N, D) features).

- ``fid``: Inception-v3 pool features (2048-d), the network of Heusel et al. 2017 in the
  TensorFlow-compatible port of torch-fidelity (through torchmetrics). Its weights
  (``pt_inception-2015-12-05-6726825d.pth``) are never downloaded: ``task.inception_weights``
  must name the local file.
- ``fid_digits`` (embedded benchmark, docs/methods.md#tasks-and-metrics): the 64-d penultimate features (after global
  pooling, before ``fc``) of the zoo's CIFAR-ResNet-20 trained on MNIST-5k. Images are turned
  grey (channel mean) and resized to 28x28 first. Not comparable with FID; never called FID.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

DIGIT_ARCH = "cifar_resnet20"
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


def check_inception_weights(path) -> Path:
    if path is None or not Path(str(path)).expanduser().is_file():
        got = "unset" if path is None else f"'{path}' is not a file"
        raise ConfigError(
            f"task.inception_weights is {got}: metric fid needs the Inception-v3 FID weights on this "
            f"machine (torch-fidelity's {INCEPTION_FILE}); pass task.inception_weights=/path/to/"
            f"{INCEPTION_FILE}. Nothing is downloaded."
        )
    return Path(str(path)).expanduser()


class InceptionFeatures:
    dim = 2048

    def __init__(self, weights: str | Path, device: torch.device):
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(self.dim)],
            feature_extractor_weights_path=str(check_inception_weights(weights)),
        )
        self.net.eval().to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch: int = 100) -> torch.Tensor:
        out = []
        for start in range(0, len(images), batch):
            x = images[start : start + batch]
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            out.append(self.net((x * 255).round().clamp(0, 255).byte().to(self.device)).float().cpu())
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


def build_features(metric: str, device: torch.device, inception_weights=None):
    if metric == "fid":
        return InceptionFeatures(inception_weights, device)
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
