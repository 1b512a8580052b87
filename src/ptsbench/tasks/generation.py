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
from dataclasses import dataclass

import torch

from ..data.base import sample_calibration
from ..errors import ConfigError
from ..schemas import knob
from .base import TASKS, Task, TaskConfig
from .frechet import feature_stats, frechet_distance
from .gen_features import build_features, check_inception_weights, to_size

METRICS = ("fid", "fid_digits")
CALIB_NOISE_OFFSET = 10_000  # calibration trajectories never reuse the evaluation noise
_REFERENCE_CACHE: dict[tuple, tuple] = {}


def _positive_int(knob: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"task.{knob}={value!r} must be an integer >= {low}")
    return value


@dataclass
class GenerationConfig(TaskConfig):
    """task=gen: types and ranges (the values are in conf/task/gen.yaml)."""

    num_samples: int = knob(ge=2)  # generated images per evaluation
    steps: int = knob(ge=1)  # DDIM steps
    eta: float = knob(ge=0)
    seed: int = knob()
    sample_batch: int = knob(ge=1)
    guidance_scale: float = knob()
    prompt: str | None = knob()
    inception_weights: str | None = knob()


@TASKS.register("gen")
class GenerationTask(Task):
    name = "gen"
    config = GenerationConfig
    metric = "fid"
    higher_is_better = False

    def __init__(
        self,
        batch_size: int = 256,
        metric: str = "fid",
        num_samples: int = 1000,
        steps: int = 50,
        eta: float = 0.0,
        seed: int = 0,
        sample_batch: int = 50,
        guidance_scale: float = 1.0,
        prompt: str | None = None,
        inception_weights: str | None = None,
        **params,
    ):
        super().__init__(batch_size, **params)
        if metric not in METRICS:
            raise ConfigError(
                f"task.metric='{metric}' for task=gen; valid choices: {', '.join(METRICS)} "
                f"(fid: Inception features; fid_digits: the embedded digit classifier)"
            )
        self.metric = metric
        self.num_samples = _positive_int("num_samples", num_samples, 2)
        self.steps = _positive_int("steps", steps)
        self.sample_batch = _positive_int("sample_batch", sample_batch)
        self.seed, self.eta, self.guidance_scale, self.prompt = int(seed), float(eta), float(guidance_scale), prompt
        self.inception_weights = check_inception_weights(inception_weights) if metric == "fid" else None
        self._features = None

    def _check_model(self, model) -> None:
        if not hasattr(model, "sample") or not hasattr(model, "unet"):
            raise ConfigError(
                "task=gen needs a diffusion model: model.source=diffusers "
                "(e.g. model=zoo_ddpm_digits, model=ldm, model=sd)"
            )

    def _sampling(self, data) -> dict:
        prompt = self.prompt if self.prompt is not None else data.meta.get("prompt", "")
        return dict(eta=self.eta, guidance_scale=self.guidance_scale, prompt=prompt, batch_size=self.sample_batch)

    def features(self, images: torch.Tensor, device) -> torch.Tensor:
        if self._features is None:
            self._features = build_features(self.metric, torch.device(device), self.inception_weights)
        return self._features(images)

    def reference_stats(self, data, size: tuple[int, int], device) -> tuple:
        """(mu, sigma) of the real test images at the generated resolution (cached per process)."""
        key = (data.name, data.meta.get("test_indices_digest", len(data.test)), self.metric, tuple(size))
        if key not in _REFERENCE_CACHE:
            feats = [self.features(to_size(x, size), device) for x, _ in data.test_loader(self.batch_size)]
            _REFERENCE_CACHE[key] = feature_stats(torch.cat(feats))
        return _REFERENCE_CACHE[key]

    @torch.no_grad()
    def evaluate(self, model, data, device) -> dict[str, float]:
        self._check_model(model)
        model.eval()
        num_samples = self.num_samples if self.max_samples is None else min(self.num_samples, max(self.max_samples, 2))
        images = model.sample(num_samples, self.steps, seed=self.seed, **self._sampling(data))
        feats = self.features(images, device).double().numpy()
        mu, sigma = feature_stats(feats)
        value = frechet_distance(
            mu, sigma, *self.reference_stats(data, images.shape[-2:], device), centered1=feats - mu
        )
        return {self.metric: value, "num_samples": num_samples, "steps": self.steps, "seed": self.seed}

    @torch.no_grad()
    def calibration_inputs(self, model, data, device, calib_cfg) -> torch.Tensor:
        """``calib.num_samples`` packed UNet inputs captured over the dense model's DDIM sampling."""
        self._check_model(model)
        n = int(calib_cfg.num_samples)
        sampling = self._sampling(data)
        per_traj = self.steps * (2 if sampling["guidance_scale"] != 1.0 and model.conditional else 1)
        captured: list[torch.Tensor] = []
        model.eval().sample(
            math.ceil(n / per_traj),
            self.steps,
            seed=CALIB_NOISE_OFFSET + int(calib_cfg.seed),
            capture=captured,
            decode=False,
            **sampling,
        )
        rows = torch.cat(captured)
        return rows[torch.from_numpy(sample_calibration(len(rows), n, int(calib_cfg.seed)))].contiguous()

    def forward_for_calibration(self, model, x: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction on packed (x_t, t, text states) rows."""
        return model(x)
