"""The embedded diffusion model (docs/methods.md#tasks-and-metrics): a small DDPM on the MNIST-5k digits.

A diffusers ``UNet2DModel`` denoiser, trained with the DDPM loss (Ho et al. 2020) on the
v-prediction target by ``scripts/train_zoo_gen.py`` and sampled with DDIM. It works on the digits padded to
32x32 and folded 2x2 into channels (``pixel_unshuffle``: 1x32x32 -> 4x16x16), a lossless,
parameter-free "autoencoder" that plays the role of the VQ/KL autoencoder of a latent diffusion
model and cuts the UNet's cost on CPU to about a third. Everything the pipeline prunes is the UNet.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

ARCH = "ddpm_digits"  # the default size; ZOO_WIDTHS names the embedded sizes
DATASET = "mnist5k_gen"
FOLD, PAD = 2, 2  # 28 + 2*2 = 32 pixels, 2x2 folded into channels -> 4x16x16
# block_out_channels of each embedded size: three widths of one UNet, so GEN findings rest on three
# models; every width divides by the 8 norm groups and the 16-channel attention heads
ZOO_WIDTHS = {
    "ddpm_digits_x0.5": (8, 16, 16),
    "ddpm_digits": (16, 32, 32),
    "ddpm_digits_x1.5": (24, 48, 48),
}
UNET_CONFIG = dict(  # every size but block_out_channels
    sample_size=16,
    in_channels=FOLD * FOLD,
    out_channels=FOLD * FOLD,
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=16,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
)
# v-prediction (Salimans & Ho 2022) and trailing DDIM timesteps (sampling starts at t = T-1, Lin et
# al. 2024): with eps-prediction this short training left grey, grainy backgrounds (fid_digits ~260
# vs ~18 for v at 1,500 iterations)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="v_prediction",
    clip_sample=True,
    timestep_spacing="trailing",
)


class PixelFold(nn.Module):
    """Images in [0, 1] <-> the UNet's space: [-1, 1], padded, 2x2 pixels folded into channels."""

    def __init__(self, fold: int = FOLD, pad: int = PAD):
        super().__init__()
        self.fold, self.pad = fold, pad

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = F.pad(images * 2 - 1, [self.pad] * 4, value=-1.0)
        return F.pixel_unshuffle(x, self.fold)

    def decode_to_unit(self, latents: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(latents, self.fold)
        if self.pad:
            x = x[..., self.pad : -self.pad, self.pad : -self.pad]
        return ((x.clamp(-1, 1) + 1) / 2).contiguous()


def ddpm_digits_unet(arch: str = ARCH) -> nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(**{**UNET_CONFIG, "block_out_channels": ZOO_WIDTHS[arch]})


def ddpm_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULER_CONFIG)


def zoo_path(arch: str = ARCH) -> Path:
    from . import zoo_checkpoint_path

    return zoo_checkpoint_path(arch, DATASET)


def load_unet(weights: str, arch: str = ARCH) -> nn.Module:
    """``weights``: ``zoo`` (the committed checkpoint), ``none`` (random init) or a state-dict file.
    ``models.diffusion.build_ddpm_digits`` wraps it into the pipeline's ``GenerationModel``."""
    unet = ddpm_digits_unet(arch)
    if weights != "none":
        path = zoo_path(arch) if weights == "zoo" else Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"model.weights={weights}: no DDPM checkpoint at {path}; train it with "
                f"`python scripts/train_zoo_gen.py --arch {arch}`, or pass model.weights=none for random init"
            )
        from ..safe_load import read_state_dict

        unet.load_state_dict(read_state_dict(path, "model.weights"))
    return unet.eval()
