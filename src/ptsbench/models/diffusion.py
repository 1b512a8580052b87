"""Diffusion models for the GEN task (paper §3.1: Stable Diffusion / latent diffusion; docs/methods.md#tasks-and-metrics, #model-repository).

``GenerationModel`` is the ``nn.Module`` the pipeline prunes. Its only registered submodule is
the denoiser ``unet``, so "every Conv/Linear of the model" is exactly the UNet; the decoder
(VQ/KL autoencoder, or the embedded model's pixel reshuffle) and the text encoder stay dense
and are shared, not copied, between the dense and the sparse model. ``forward(packed)`` is
the UNet's noise prediction on packed calibration inputs ``[x_t | t | text states]`` captured
over DDIM sampling (``sample(..., capture=list)``); ``sample`` is plain DDIM (Song et al. 2021)
with optional classifier-free guidance, from a CPU generator so the noise is the same on
every device and for the dense and the sparse model.

``model.source=diffusers``, ``model.arch``: ``ddpm_digits`` (embedded, MNIST-5k; also ``_x0.5`` and ``_x1.5`` widths), ``ldm``
(UNet2DModel on VQ/KL latents, LDMPipeline layout), ``sd`` (Stable Diffusion layout);
``model.weights``: a local diffusers folder, ``zoo`` (the embedded ddpm_digits sizes), or ``none`` (tiny
random-init pipeline of that arch, for tests).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ..errors import ConfigError
from ..schemas import knob
from .adapters._packed import pack_side_inputs
from .diffusion_zoo import ZOO_WIDTHS
from .sources import MODEL_SOURCES, ModelConfig

ZOO_DDPMS = tuple(ZOO_WIDTHS)  # the embedded sizes (model.weights=zoo)
ARCHS = (*ZOO_DDPMS, "ldm", "sd")


class _Frozen:
    """Holds modules that must not be registered (so they are never pruned, counted or copied)."""

    decoder: Any
    text_encoder: Any
    tokenizer: Any

    def __init__(self, **parts):
        self.__dict__.update(parts)

    def modules(self) -> list[nn.Module]:
        return [m for m in self.__dict__.values() if isinstance(m, nn.Module)]


class GenerationModel(nn.Module):
    def __init__(
        self,
        unet: nn.Module,
        scheduler_config: dict,
        decoder,
        *,
        arch: str,
        text_encoder: nn.Module | None = None,
        tokenizer=None,
    ):
        super().__init__()
        self.unet = unet
        self.arch = arch
        self.scheduler_config = dict(scheduler_config)
        self.frozen = _Frozen(decoder=decoder, text_encoder=text_encoder, tokenizer=tokenizer)
        for m in self.frozen.modules():
            m.eval().requires_grad_(False)
        unet_config = cast(Any, unet).config  # a diffusers UNet's
        size = unet_config.sample_size
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        self.latent_shape = (int(unet_config.in_channels), *map(int, size))
        self.conditional = text_encoder is not None
        self.cond_shape: tuple[int, int] | None = None  # set exactly when conditional
        if self.conditional:
            self.cond_shape = (int(tokenizer.model_max_length), int(cast(Any, text_encoder).config.hidden_size))
        self._prompt_cache: dict[tuple, torch.Tensor] = {}
        pack_side_inputs(self.unet)

    # the frozen parts follow .to()/.cuda() but are shared by deep copies (they never change)
    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for m in self.frozen.modules():
            m._apply(fn, recurse)
        self._prompt_cache.clear()
        return self

    def __deepcopy__(self, memo):
        memo[id(self.frozen)] = self.frozen
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        new._prompt_cache = {}
        return new

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    # ---- packed calibration inputs: one row = one UNet call on one sample ----
    def pack(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        parts = [x.flatten(1), t.to(x.dtype).reshape(-1, 1).expand(len(x), 1)]
        if self.conditional:
            assert cond is not None  # a conditional model's calls carry the prompt embedding
            parts.append(cond.to(x.dtype).flatten(1))
        return torch.cat(parts, 1)

    def unpack(self, packed: torch.Tensor):
        n_x = math.prod(self.latent_shape)
        x = packed[:, :n_x].reshape(-1, *self.latent_shape)
        t = packed[:, n_x].round().long()
        cond = packed[:, n_x + 1 :].reshape(-1, *self.cond_shape) if self.cond_shape is not None else None
        return x, t, cond

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        """UNet noise prediction on packed inputs (what allocators/reconstruction run)."""
        x, t, cond = self.unpack(packed)
        return self.denoise(x, t, cond)

    def denoise(self, x, t, cond=None) -> torch.Tensor:
        kw = {"encoder_hidden_states": cond} if self.conditional else {}
        return self.unet(x, t, **kw, return_dict=False)[0]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        dev = self.device
        x = torch.randn(batch, *self.latent_shape, device=dev)
        cond = torch.zeros(batch, *self.cond_shape, device=dev) if self.cond_shape is not None else None
        return self.pack(x, torch.full((batch,), 500, device=dev), cond)

    @torch.no_grad()
    def prompt_embeddings(self, prompt: str) -> torch.Tensor:
        key = (prompt, str(self.device))
        if key not in self._prompt_cache:
            tok, enc = self.frozen.tokenizer, self.frozen.text_encoder
            ids = tok(
                [prompt], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
            ).input_ids
            self._prompt_cache[key] = enc(ids.to(self.device))[0]
        return self._prompt_cache[key]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1]."""
        dec = self.frozen.decoder
        if hasattr(dec, "decode_to_unit"):
            return dec.decode_to_unit(latents)
        scale = getattr(dec.config, "scaling_factor", 1.0) or 1.0
        img = dec.decode(latents / scale, return_dict=False)[0]
        return (img / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def sample(
        self,
        num: int,
        steps: int,
        seed: int = 0,
        batch_size: int = 64,
        eta: float = 0.0,
        guidance_scale: float = 1.0,
        prompt: str = "",
        capture: list | None = None,
        decode: bool = True,
    ) -> torch.Tensor:
        """``num`` DDIM samples (images in [0, 1] on the CPU, or final latents if not ``decode``).

        ``capture``: a list that receives the packed UNet inputs of every denoising call.
        """
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_config(self.scheduler_config)
        sched.set_timesteps(int(steps))
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((num, *self.latent_shape), generator=gen)
        dev = self.device
        cond = uncond = None
        if self.conditional:
            cond = self.prompt_embeddings(prompt)
            uncond = self.prompt_embeddings("") if guidance_scale != 1.0 else None
        out = []
        for start in range(0, num, batch_size):
            lat = noise[start : start + batch_size].to(dev) * sched.init_noise_sigma
            b = len(lat)
            for t in sched.timesteps:
                inp = sched.scale_model_input(lat, t)
                tt = torch.full((b,), int(t), device=dev, dtype=torch.long)
                if uncond is not None:
                    assert cond is not None  # both come with the prompt
                    inp2, tt2 = torch.cat([inp, inp]), torch.cat([tt, tt])
                    c2 = torch.cat([uncond.expand(b, -1, -1), cond.expand(b, -1, -1)])
                    if capture is not None:
                        capture.append(self.pack(inp2, tt2, c2).cpu())
                    e_u, e_c = self.denoise(inp2, tt2, c2).chunk(2)
                    eps = e_u + guidance_scale * (e_c - e_u)
                else:
                    c = cond.expand(b, -1, -1) if cond is not None else None
                    if capture is not None:
                        capture.append(self.pack(inp, tt, c).cpu())
                    eps = self.denoise(inp, tt, c)
                lat = sched.step(eps, t, lat, eta=eta, generator=gen).prev_sample
            out.append((self.decode(lat) if decode else lat).float().cpu())
        return torch.cat(out)


def _load_folder(folder: Path, arch: str) -> GenerationModel:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    parts = pipe.components
    decoder = parts.get("vqvae") or parts.get("vae")
    if parts.get("unet") is None or decoder is None or parts.get("scheduler") is None:
        raise ConfigError(
            f"model.weights='{folder}': a diffusers folder with unet, vae/vqvae and scheduler "
            f"is needed; found components {sorted(k for k, v in parts.items() if v is not None)}"
        )
    from .ldm_convert import apply_fixed_heads

    apply_fixed_heads(parts["unet"], folder)  # a converted CompVis UNet with a fixed head count
    text = parts.get("text_encoder")
    if arch == "sd" and (text is None or parts.get("tokenizer") is None):
        raise ConfigError(
            f"model.weights='{folder}': model.arch=sd needs text_encoder and tokenizer; "
            f"use model.arch=ldm for an unconditional latent diffusion folder"
        )
    return GenerationModel(
        parts["unet"],
        parts["scheduler"].config,
        decoder,
        arch=arch,
        text_encoder=text if arch == "sd" else None,
        tokenizer=parts.get("tokenizer") if arch == "sd" else None,
    )


def from_pipeline(pipe, arch: str) -> GenerationModel:
    """Wrap an in-memory diffusers pipeline (LDMPipeline / StableDiffusionPipeline layout)."""
    parts = pipe.components
    cond = arch == "sd"
    return GenerationModel(
        parts["unet"],
        parts["scheduler"].config,
        parts.get("vqvae") or parts.get("vae"),
        arch=arch,
        text_encoder=parts.get("text_encoder") if cond else None,
        tokenizer=parts.get("tokenizer") if cond else None,
    )


@dataclass(frozen=True)
class DiffusersModelConfig(ModelConfig):
    init_seed: int = knob(0)  # weights=none: the seed of the tiny random-init pipeline


def check_config(cfg: DiffusersModelConfig) -> None:
    """model.arch and model.weights, checked before any data or model is loaded."""
    arch = str(cfg.arch)
    if arch not in ARCHS:
        raise ConfigError(f"model.arch='{arch}' for model.source=diffusers; valid choices: {', '.join(ARCHS)}")
    weights = cfg.weights
    if weights is None:
        raise ConfigError(
            f"model.weights is required for model.arch={arch}: a local diffusers folder "
            f"(model.weights=/models/{arch}), or model.weights=none for a tiny random-init pipeline"
        )
    weights = str(weights)
    if arch in ZOO_DDPMS and weights == "zoo":
        from .diffusion_zoo import zoo_path

        if not zoo_path(arch).is_file():
            raise ConfigError(
                f"model.weights=zoo: no DDPM checkpoint at {zoo_path(arch)}; train it with "
                f"`python scripts/train_zoo_gen.py --arch {arch}`, or pass model.weights=none for random init"
            )
    if arch in ZOO_DDPMS or weights == "none":
        return
    if weights == "zoo":
        raise ConfigError(
            f"model.weights=zoo exists only for the embedded DDPMs ({', '.join(ZOO_DDPMS)}); for arch={arch} pass a local "
            f"diffusers folder (model.weights=/models/{arch}) or model.weights=none"
        )
    if not (Path(weights).expanduser() / "model_index.json").is_file():
        raise ConfigError(
            f"model.weights='{weights}' is not a local diffusers folder (no model_index.json); "
            f"save one with pipe.save_pretrained(folder) and pass model.weights=<folder>"
        )


def build_ddpm_digits(weights: str, arch: str = "ddpm_digits") -> GenerationModel:
    """An embedded DDPM (``models.diffusion_zoo``; ``weights``: zoo | none | a state-dict file)."""
    from .diffusion_zoo import PixelFold, ddpm_scheduler, load_unet

    return GenerationModel(load_unet(weights, arch), ddpm_scheduler().config, PixelFold(), arch=arch)


# loads_weights: build_model must not torch.load a diffusers folder
@MODEL_SOURCES.register("diffusers", config=DiffusersModelConfig, check=check_config, loads_weights=True)
def _build(cfg: DiffusersModelConfig, num_classes: int, in_chans: int, img_size: int) -> GenerationModel:
    check_config(cfg)
    arch, weights = str(cfg.arch), str(cfg.weights)
    if arch in ZOO_DDPMS:
        return build_ddpm_digits(weights, arch)
    if weights == "none":
        from .diffusion_tiny import tiny_pipeline

        return from_pipeline(tiny_pipeline(arch, seed=cfg.init_seed), arch)
    return _load_folder(Path(weights).expanduser(), arch)
