"""CompVis latent-diffusion checkpoints -> the diffusers folder the GEN task runs (``model.arch=ldm``).

``ptsbench-convert-ldm --ckpt model.ckpt --config config.yaml --out weights/lsun_churches_ldm`` reads an
original LDM checkpoint (LSUN bedrooms LDM-4 on a VQ-f4 autoencoder, churches LDM-8 on a KL-f8 one)
and its config, offline, and writes an ``LDMPipeline`` layout folder: ``unet`` (UNet2DModel),
``vqvae`` (VQModel or AutoencoderKL) and ``scheduler`` (DDIM with the checkpoint's linear beta
schedule). The first stage goes through diffusers' own converter (``convert_ldm_vae_checkpoint``,
which reads the encoder/decoder layout shared by CompVis' VQ and KL models); diffusers has no
converter for the unconditional ``openaimodel.UNetModel`` with legacy ``AttentionBlock``s (its
``convert_ldm_unet_checkpoint`` expects SpatialTransformers), so :func:`convert_unet` maps it here:
- ``time_embed.0/2`` -> ``time_embedding.linear_1/2``; ``input_blocks.0.0`` -> ``conv_in``;
  ``out.0/2`` -> ``conv_norm_out``/``conv_out``;
- a ResBlock's ``in_layers.0/2``, ``emb_layers.1``, ``out_layers.0/3``, ``skip_connection`` ->
  ``norm1``/``conv1``, ``time_emb_proj``, ``norm2``/``conv2``, ``conv_shortcut``
  (``use_scale_shift_norm`` -> ``resnet_time_scale_shift=scale_shift``; ``resblock_updown`` ->
  ResBlocks as down/up samplers);
- an AttentionBlock's ``norm``, fused 1x1 ``qkv`` and ``proj_out`` -> ``group_norm``,
  ``to_q``/``to_k``/``to_v`` (the legacy order interleaves heads: channels are
  [head][q, k, v][head dim]) and ``to_out.0``;
- ``input_blocks`` 1.. -> ``down_blocks[level]`` (``num_res_blocks`` ResBlocks [+ attention] then
  the downsampler), ``middle_block.0/1/2`` -> ``mid_block`` resnet, attention, resnet,
  ``output_blocks`` -> ``up_blocks`` (``num_res_blocks + 1`` each, then the upsampler).
A fixed head count (``num_heads`` with ``num_head_channels: -1``, churches) has no UNet2DModel
config key: it is written to ``unet/ptsbench.json`` and set on the attention modules on load.
The latent ``scale_factor`` of the checkpoint becomes the autoencoder's ``scaling_factor``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import cast

import torch

from ..errors import ConfigError

UNET_PREFIX = "model.diffusion_model."
FIRST_STAGE_PREFIX = "first_stage_model."
HEADS_FILE = "ptsbench.json"


def _attn_levels(p: dict) -> list[bool]:
    return [2**i in set(p.get("attention_resolutions", [])) for i in range(len(p["channel_mult"]))]


def unet_config(p: dict) -> tuple[dict, int | None]:
    """UNet2DModel kwargs for openaimodel params ``p``, and a fixed head count to set on load (or None)."""
    attn, updown = _attn_levels(p), bool(p.get("resblock_updown", False))
    plain_down, plain_up = (
        ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if updown else ("DownBlock2D", "UpBlock2D")
    )
    head_ch = int(p.get("num_head_channels", -1))
    cfg = dict(
        sample_size=int(p["image_size"]),
        in_channels=int(p["in_channels"]),
        out_channels=int(p["out_channels"]),
        block_out_channels=[int(p["model_channels"]) * int(m) for m in p["channel_mult"]],
        layers_per_block=int(p["num_res_blocks"]),
        down_block_types=["AttnDownBlock2D" if a else plain_down for a in attn],
        up_block_types=["AttnUpBlock2D" if a else plain_up for a in reversed(attn)],
        downsample_type="resnet" if updown else "conv",
        upsample_type="resnet" if updown else "conv",
        resnet_time_scale_shift="scale_shift" if p.get("use_scale_shift_norm", False) else "default",
        attention_head_dim=head_ch if head_ch > 0 else None,
        attn_norm_num_groups=32,
        norm_num_groups=32,
        norm_eps=1e-5,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
        downsample_padding=1,
        time_embedding_type="positional",
        add_attention=True,
    )
    return cfg, (int(p.get("num_heads", 1)) if head_ch <= 0 else None)


RES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}


def _resblock(src: dict, old: str, new: str, out: dict) -> None:
    for k in [k for k in src if k.startswith(old + ".")]:
        rest = k[len(old) + 1 :]
        part, _, leaf = rest.rpartition(".")
        if part not in RES:
            raise ConfigError(f"LDM checkpoint: unexpected ResBlock tensor {k}")
        out[f"{new}.{RES[part]}.{leaf}"] = src.pop(k)


def _attention(src: dict, old: str, new: str, out: dict, heads: int) -> None:
    out[f"{new}.group_norm.weight"] = src.pop(f"{old}.norm.weight")
    out[f"{new}.group_norm.bias"] = src.pop(f"{old}.norm.bias")
    w, b = src.pop(f"{old}.qkv.weight"), src.pop(f"{old}.qkv.bias")
    c = w.shape[1]
    w = w.reshape(heads, 3, c // heads, c)
    b = b.reshape(heads, 3, c // heads)
    for i, name in enumerate(("to_q", "to_k", "to_v")):  # legacy order: [head][q, k, v][head dim]
        out[f"{new}.{name}.weight"] = w[:, i].reshape(c, c).contiguous()
        out[f"{new}.{name}.bias"] = b[:, i].reshape(c).contiguous()
    out[f"{new}.to_out.0.weight"] = src.pop(f"{old}.proj_out.weight").reshape(c, c)
    out[f"{new}.to_out.0.bias"] = src.pop(f"{old}.proj_out.bias")


def _sampler(src: dict, old: str, new: str, out: dict, updown: bool) -> None:
    if updown:
        _resblock(src, old, new, out)
    else:
        for leaf in ("weight", "bias"):
            key = f"{old}.op.{leaf}" if f"{old}.op.{leaf}" in src else f"{old}.conv.{leaf}"
            out[f"{new}.conv.{leaf}"] = src.pop(key)


def convert_unet(state: dict[str, torch.Tensor], p: dict) -> dict[str, torch.Tensor]:
    """openaimodel.UNetModel tensors (prefix stripped) -> UNet2DModel tensors; every tensor is used."""
    src, out = dict(state), {}
    nr, attn, updown = int(p["num_res_blocks"]), _attn_levels(p), bool(p.get("resblock_updown", False))
    mult = [int(m) for m in p["channel_mult"]]
    head_ch = int(p.get("num_head_channels", -1))

    def heads(ch: int) -> int:
        return ch // head_ch if head_ch > 0 else int(p.get("num_heads", 1))

    for old, new in (
        ("time_embed.0", "time_embedding.linear_1"),
        ("time_embed.2", "time_embedding.linear_2"),
        ("input_blocks.0.0", "conv_in"),
        ("out.0", "conv_norm_out"),
        ("out.2", "conv_out"),
    ):
        for leaf in ("weight", "bias"):
            out[f"{new}.{leaf}"] = src.pop(f"{old}.{leaf}")
    idx = 1
    for level, m in enumerate(mult):
        ch = int(p["model_channels"]) * m
        for j in range(nr):
            _resblock(src, f"input_blocks.{idx}.0", f"down_blocks.{level}.resnets.{j}", out)
            if attn[level]:
                _attention(src, f"input_blocks.{idx}.1", f"down_blocks.{level}.attentions.{j}", out, heads(ch))
            idx += 1
        if level != len(mult) - 1:
            _sampler(src, f"input_blocks.{idx}.0", f"down_blocks.{level}.downsamplers.0", out, updown)
            idx += 1
    ch = int(p["model_channels"]) * mult[-1]
    _resblock(src, "middle_block.0", "mid_block.resnets.0", out)
    _attention(src, "middle_block.1", "mid_block.attentions.0", out, heads(ch))
    _resblock(src, "middle_block.2", "mid_block.resnets.1", out)
    idx = 0
    for up, level in enumerate(reversed(range(len(mult)))):
        ch = int(p["model_channels"]) * mult[level]
        for j in range(nr + 1):
            _resblock(src, f"output_blocks.{idx}.0", f"up_blocks.{up}.resnets.{j}", out)
            pos = 1
            if attn[level]:
                _attention(src, f"output_blocks.{idx}.1", f"up_blocks.{up}.attentions.{j}", out, heads(ch))
                pos = 2
            if level and j == nr:
                _sampler(src, f"output_blocks.{idx}.{pos}", f"up_blocks.{up}.upsamplers.0", out, updown)
            idx += 1
    if src:
        raise ConfigError(
            f"LDM checkpoint: {len(src)} UNet tensors the config does not explain, e.g. {sorted(src)[:4]}"
        )
    return out


def convert_first_stage(state: dict[str, torch.Tensor], fs: dict, scale_factor: float):
    """(diffusers autoencoder, its tensors) for CompVis' ``first_stage_config`` (VQModelInterface or AutoencoderKL)."""
    from diffusers import AutoencoderKL, VQModel
    from diffusers.pipelines.stable_diffusion.convert_from_ckpt import convert_ldm_vae_checkpoint

    dd, params, target = fs["params"]["ddconfig"], fs["params"], str(fs["target"])
    res = int(dd["resolution"])
    ch = [int(dd["ch"]) * int(m) for m in dd["ch_mult"]]
    attn_res = set(dd.get("attn_resolutions", []))
    common = dict(
        in_channels=int(dd["in_channels"]),
        out_channels=int(dd["out_ch"]),
        block_out_channels=ch,
        layers_per_block=int(dd["num_res_blocks"]),
        latent_channels=int(dd["z_channels"]),
        down_block_types=[
            "AttnDownEncoderBlock2D" if res // 2**i in attn_res else "DownEncoderBlock2D" for i in range(len(ch))
        ],
        up_block_types=[
            "AttnUpDecoderBlock2D" if res // 2**i in attn_res else "UpDecoderBlock2D" for i in range(len(ch))
        ][::-1],
        sample_size=res,
        scaling_factor=float(scale_factor),
    )
    fs_state = {k: v for k, v in state.items() if not k.startswith("loss.")}  # the training discriminator
    converted = convert_ldm_vae_checkpoint(fs_state, common)
    if "VQ" in target:
        model = VQModel(**common, num_vq_embeddings=int(params["n_embed"]), vq_embed_dim=int(params["embed_dim"]))
        converted["quantize.embedding.weight"] = fs_state["quantize.embedding.weight"]
    else:
        model = AutoencoderKL(**common)
    return model, converted


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` tensors of a CompVis/Lightning ``.ckpt``; its pickled training state stays inert."""
    from ..safe_load import read_state_dict

    return read_state_dict(path, "--ckpt")


def convert(ckpt: Path, config: Path, out: Path) -> Path:
    """Write the diffusers folder for ``ckpt`` + ``config`` at ``out`` and return it."""
    from diffusers import DDIMScheduler, LDMPipeline, UNet2DModel
    from omegaconf import OmegaConf

    params = cast(dict, OmegaConf.to_container(OmegaConf.load(config), resolve=True))["model"]["params"]
    state = read_checkpoint(ckpt)
    unet_state = {k[len(UNET_PREFIX) :]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    fs_state = {k[len(FIRST_STAGE_PREFIX) :]: v for k, v in state.items() if k.startswith(FIRST_STAGE_PREFIX)}
    if not unet_state or not fs_state:
        raise ConfigError(
            f"{ckpt}: not a CompVis LatentDiffusion checkpoint (no {UNET_PREFIX}* / {FIRST_STAGE_PREFIX}* tensors)"
        )
    ucfg, fixed_heads = unet_config(params["unet_config"]["params"])
    unet = UNet2DModel(**ucfg)
    unet.load_state_dict(convert_unet(unet_state, params["unet_config"]["params"]), strict=True)
    scale = float(state["scale_factor"]) if "scale_factor" in state else float(params.get("scale_factor", 1.0))
    vqvae, fs_converted = convert_first_stage(fs_state, params["first_stage_config"], scale)
    vqvae.load_state_dict(fs_converted, strict=True)
    scheduler = DDIMScheduler(
        num_train_timesteps=int(params.get("timesteps", 1000)),
        beta_schedule="scaled_linear",
        beta_start=float(params.get("linear_start", 0.0015)),
        beta_end=float(params.get("linear_end", 0.0195)),
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    out.mkdir(parents=True, exist_ok=True)
    LDMPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler).save_pretrained(str(out))
    if fixed_heads is not None:
        (out / "unet" / HEADS_FILE).write_text(json.dumps({"attention_heads": fixed_heads}) + "\n")
    return out


def apply_fixed_heads(unet, folder: Path) -> None:
    """Set the head count a converted CompVis UNet uses on every attention module (see the docstring)."""
    path = folder / "unet" / HEADS_FILE
    if not path.is_file():
        return
    heads = int(json.loads(path.read_text())["attention_heads"])
    from diffusers.models.attention_processor import Attention

    for m in unet.modules():
        if isinstance(m, Attention):
            m.heads = heads
            m.scale = (m.inner_dim // heads) ** -0.5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ptsbench-convert-ldm", description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, required=True, help="CompVis model.ckpt (e.g. models/ldm/lsun_churches256)")
    ap.add_argument("--config", type=Path, required=True, help="its config.yaml")
    ap.add_argument("--out", type=Path, required=True, help="diffusers folder to write (then model.weights=<out>)")
    args = ap.parse_args(argv)
    try:
        print(convert(args.ckpt, args.config, args.out))
    except ConfigError as e:
        ap.exit(2, f"ptsbench-convert-ldm: {e}\n")
    return 0
