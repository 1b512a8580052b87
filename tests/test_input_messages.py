"""Bad input is one line naming the knob (or file) and what is valid: an unknown model family for
``ptsbench-models``, an image file that does not decode (named, also from DataLoader workers), and
``digits_det`` knobs outside their range."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ptsbench.config.spec import resolve as validate_config
from ptsbench.data.detection import read_rgb
from ptsbench.data.generation import ImageFolderUnit
from ptsbench.data.images import EvalPreprocess, ImageFiles, UnreadableImage
from ptsbench.errors import ConfigError
from ptsbench.list_models import main as list_models


def test_unknown_model_family_exits_2_naming_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as e:
        list_models(["resnet", "nosuchfamily"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith("ptsbench-models: error: no model family 'nosuchfamily'; valid: deit, ")
    assert ", resnet, " in err[0] and ", vit" in err[0]
    list_models(["vgg", "--no-params"])  # known families still list
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert sorted(r.split()[0] for r in rows) == ["cifar_vgg19", "vgg19"]


@pytest.fixture
def truncated_jpeg(tmp_path):
    good, bad = tmp_path / "good.JPEG", tmp_path / "bad.JPEG"
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(good)
    bad.write_bytes(good.read_bytes()[:300])
    return good, bad


def test_a_truncated_image_is_named_by_every_image_reader(truncated_jpeg):
    good, bad = truncated_jpeg
    want = rf"^dataset.root: {bad} is not a readable image \(.*\); replace or remove it$"
    files = ImageFiles([(str(good), 0), (str(bad), 1)], EvalPreprocess(crop_size=32, resize_size=36))
    assert files[0][0].shape == (3, 32, 32)
    with pytest.raises(UnreadableImage, match=want):
        files[1]
    with pytest.raises(UnreadableImage, match=want):
        read_rgb(bad)
    with pytest.raises(UnreadableImage, match=want):
        ImageFolderUnit([bad], 16)[0]
    (bad.parent / "notes.JPEG").write_text("not an image")
    with pytest.raises(UnreadableImage, match="notes.JPEG is not a readable image"):
        read_rgb(bad.parent / "notes.JPEG")


def test_a_truncated_image_read_by_a_worker_process_is_still_one_line(truncated_jpeg):
    good, bad = truncated_jpeg
    files = ImageFiles([(str(good), 0), (str(bad), 1)], EvalPreprocess(crop_size=32, resize_size=36))
    loader = torch.utils.data.DataLoader(files, batch_size=1, num_workers=1)
    with pytest.raises(ConfigError) as e:
        list(loader)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"dataset.root: {bad} is not a readable image (")


@pytest.mark.parametrize(
    "knob,message",
    [
        ("dataset.digit_size=[40,30]", "dataset.digit_size=[40,30] must be [min, max] with 11 <= min <= max <= "),
        ("dataset.digit_size=[18,80]", "dataset.digit_size=[18,80] must be [min, max] with "),
        ("dataset.digit_size=[5,20]", "dataset.digit_size=[5,20] must be [min, max] with 11 <= min"),
        ("dataset.digit_size=[20]", "dataset.digit_size=[20] must be [min, max]"),
        (
            "dataset.canvas=12",
            "dataset.digit_size=[18,30] must be [min, max] with 11 <= min <= max <= dataset.canvas=12",
        ),
        ("dataset.canvas=8", "dataset.canvas=8 must be an integer >= 11"),
        ("dataset.seed=-1", "dataset.seed=-1 must be an integer >= 0"),
        ("dataset.max_digits=100000", "dataset.max_digits=100000 must be an integer <= 32"),
        ("dataset.num_train=10000000", "dataset.num_train=10000000 + dataset.num_test=400 canvases of 64x64 need"),
    ],
)
def test_digits_det_knobs_out_of_range_are_refused_before_any_canvas_is_drawn(make_cfg, knob, message):
    cfg = make_cfg("task=det", "model=zoo_retinanet_digits", "dataset=digits_det", knob)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
