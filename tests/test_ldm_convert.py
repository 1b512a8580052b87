"""CompVis latent-diffusion checkpoints -> diffusers (``ptsbench-convert-ldm``).

The synthetic checkpoints are written from CompVis' architecture (``openaimodel.UNetModel`` with
legacy AttentionBlocks, the ``Encoder``/``Decoder`` of its VQ/KL autoencoders): parameter names and
shapes only, at toy widths. Conversion is strict both ways (every source tensor used, every
diffusers parameter filled), and the legacy fused-qkv attention is checked numerically."""

from __future__ import annotations

import pytest
import torch
import yaml
from omegaconf import OmegaConf

pytest.importorskip("diffusers")

from ptsbench.models import build_model  # noqa: E402
from ptsbench.models.ldm_convert import convert, main  # noqa: E402


def _t(s, key, *shape):
    s[key] = torch.randn(*shape) * 0.1


def _norm(s, key, c):
    s[f"{key}.weight"], s[f"{key}.bias"] = torch.rand(c) + 0.5, torch.randn(c) * 0.1


def _conv(s, key, cout, cin, k=3, dims=2):
    _t(s, f"{key}.weight", cout, cin, *([k] * dims))
    _t(s, f"{key}.bias", cout)


def unet_layout(p) -> dict:
    """openaimodel.UNetModel tensors for params ``p``."""
    s, mc = {}, p["model_channels"]
    emb, ss = 4 * mc, p.get("use_scale_shift_norm", False)
    attn = [2**i in p["attention_resolutions"] for i in range(len(p["channel_mult"]))]

    def res(key, cin, cout):
        _norm(s, f"{key}.in_layers.0", cin)
        _conv(s, f"{key}.in_layers.2", cout, cin)
        _t(s, f"{key}.emb_layers.1.weight", 2 * cout if ss else cout, emb)
        _t(s, f"{key}.emb_layers.1.bias", 2 * cout if ss else cout)
        _norm(s, f"{key}.out_layers.0", cout)
        _conv(s, f"{key}.out_layers.3", cout, cout)
        if cin != cout:
            _conv(s, f"{key}.skip_connection", cout, cin, 1)

    def att(key, c):
        _norm(s, f"{key}.norm", c)
        _conv(s, f"{key}.qkv", 3 * c, c, 1, dims=1)
        _conv(s, f"{key}.proj_out", c, c, 1, dims=1)

    def sampler(key, c):
        if p.get("resblock_updown"):
            res(key, c, c)
        else:
            _conv(s, key, c, c)

    _t(s, "time_embed.0.weight", emb, mc), _t(s, "time_embed.0.bias", emb)
    _t(s, "time_embed.2.weight", emb, emb), _t(s, "time_embed.2.bias", emb)
    _conv(s, "input_blocks.0.0", mc, p["in_channels"])
    ch, chans, idx = mc, [mc], 1
    for level, m in enumerate(p["channel_mult"]):
        for _ in range(p["num_res_blocks"]):
            res(f"input_blocks.{idx}.0", ch, m * mc)
            ch = m * mc
            if attn[level]:
                att(f"input_blocks.{idx}.1", ch)
            chans.append(ch)
            idx += 1
        if level != len(p["channel_mult"]) - 1:
            sampler(f"input_blocks.{idx}.0" + ("" if p.get("resblock_updown") else ".op"), ch)
            chans.append(ch)
            idx += 1
    res("middle_block.0", ch, ch), att("middle_block.1", ch), res("middle_block.2", ch, ch)
    idx = 0
    for level in reversed(range(len(p["channel_mult"]))):
        for i in range(p["num_res_blocks"] + 1):
            res(f"output_blocks.{idx}.0", ch + chans.pop(), mc * p["channel_mult"][level])
            ch = mc * p["channel_mult"][level]
            pos = 1
            if attn[level]:
                att(f"output_blocks.{idx}.1", ch)
                pos = 2
            if level and i == p["num_res_blocks"]:
                sampler(f"output_blocks.{idx}.{pos}" + ("" if p.get("resblock_updown") else ".conv"), ch)
            idx += 1
    _norm(s, "out.0", ch)
    _conv(s, "out.2", p["out_channels"], ch)
    return s


def autoencoder_layout(fs) -> dict:
    """CompVis Encoder/Decoder (+ quant convs, codebook) tensors for ``first_stage_config.params``."""
    s, dd = {}, fs["ddconfig"]
    ch, mult, nr, z = dd["ch"], dd["ch_mult"], dd["num_res_blocks"], dd["z_channels"]

    def block(key, cin, cout):
        _norm(s, f"{key}.norm1", cin), _conv(s, f"{key}.conv1", cout, cin)
        _norm(s, f"{key}.norm2", cout), _conv(s, f"{key}.conv2", cout, cout)
        if cin != cout:
            _conv(s, f"{key}.nin_shortcut", cout, cin, 1)

    def attn(key, c):
        _norm(s, f"{key}.norm", c)
        for n in ("q", "k", "v", "proj_out"):
            _conv(s, f"{key}.{n}", c, c, 1)

    _conv(s, "encoder.conv_in", ch, dd["in_channels"])
    block_in = ch
    for i, m in enumerate(mult):
        block_in = ch * ([1] + list(mult))[i]
        for j in range(nr):
            block(f"encoder.down.{i}.block.{j}", block_in, ch * m)
            block_in = ch * m
        if i != len(mult) - 1:
            _conv(s, f"encoder.down.{i}.downsample.conv", block_in, block_in)
    for part in ("encoder", "decoder"):
        c = ch * mult[-1]
        if part == "decoder":
            _conv(s, "decoder.conv_in", c, z)
        block(f"{part}.mid.block_1", c, c), attn(f"{part}.mid.attn_1", c), block(f"{part}.mid.block_2", c, c)
    _norm(s, "encoder.norm_out", block_in)
    _conv(s, "encoder.conv_out", 2 * z if dd["double_z"] else z, block_in)
    block_in = ch * mult[-1]
    for i in reversed(range(len(mult))):
        for j in range(nr + 1):
            block(f"decoder.up.{i}.block.{j}", block_in, ch * mult[i])
            block_in = ch * mult[i]
        if i != 0:
            _conv(s, f"decoder.up.{i}.upsample.conv", block_in, block_in)
    _norm(s, "decoder.norm_out", block_in)
    _conv(s, "decoder.conv_out", dd["out_ch"], block_in)
    e = fs["embed_dim"]
    _conv(s, "quant_conv", 2 * e if dd["double_z"] else e, 2 * z if dd["double_z"] else z, 1)
    _conv(s, "post_quant_conv", z, e, 1)
    if "n_embed" in fs:
        _t(s, "quantize.embedding.weight", fs["n_embed"], e)
    _conv(s, "loss.discriminator.main.0", 8, 3)  # training-only tensors a .ckpt also carries
    return s


DD = {
    "double_z": False,
    "z_channels": 3,
    "resolution": 32,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 32,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "dropout": 0.0,
}
# toy versions of the LSUN configs: bedrooms LDM-4 (VQ-f4, num_head_channels) and churches LDM-8
# (KL-f8, fixed num_heads, use_scale_shift_norm, resblock_updown)
BEDROOMS = {
    "linear_start": 0.0015,
    "linear_end": 0.0195,
    "timesteps": 1000,
    "unet_config": {
        "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
        "params": {
            "image_size": 8,
            "in_channels": 3,
            "out_channels": 3,
            "model_channels": 32,
            "attention_resolutions": [2],
            "num_res_blocks": 1,
            "channel_mult": [1, 2],
            "num_head_channels": 16,
        },
    },
    "first_stage_config": {
        "target": "ldm.models.autoencoder.VQModelInterface",
        "params": {"embed_dim": 3, "n_embed": 16, "ddconfig": DD},
    },
}
CHURCHES = {
    "linear_start": 0.0015,
    "linear_end": 0.0155,
    "timesteps": 1000,
    "scale_factor": 0.22765929,
    "unet_config": {
        "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
        "params": {
            "image_size": 8,
            "in_channels": 4,
            "out_channels": 4,
            "model_channels": 32,
            "attention_resolutions": [1, 2],
            "num_res_blocks": 1,
            "channel_mult": [1, 2, 2],
            "num_heads": 2,
            "use_scale_shift_norm": True,
            "resblock_updown": True,
        },
    },
    "first_stage_config": {
        "target": "ldm.models.autoencoder.AutoencoderKL",
        "params": {"embed_dim": 4, "ddconfig": {**DD, "double_z": True, "z_channels": 4}},
    },
}


def _write(tmp_path, name, params):
    state = {f"model.diffusion_model.{k}": v for k, v in unet_layout(params["unet_config"]["params"]).items()}
    state.update(
        {f"first_stage_model.{k}": v for k, v in autoencoder_layout(params["first_stage_config"]["params"]).items()}
    )
    state["scale_factor"] = torch.tensor(float(params.get("scale_factor", 1.0)))
    ckpt, cfg = tmp_path / f"{name}.ckpt", tmp_path / f"{name}.yaml"
    # a Lightning checkpoint: tensors under state_dict, next to pickled training state
    torch.save({"epoch": 3, "global_step": 10, "state_dict": state, "callbacks": {"x": [1, 2]}}, ckpt)
    cfg.write_text(yaml.safe_dump({"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params}}))
    return ckpt, cfg


@pytest.mark.parametrize("name,params", [("bedrooms", BEDROOMS), ("churches", CHURCHES)])
def test_compvis_ldm_converts_strictly_and_samples(name, params, tmp_path):
    torch.manual_seed(0)
    ckpt, cfg = _write(tmp_path, name, params)
    out = tmp_path / f"lsun_{name}_ldm"
    assert main(["--ckpt", str(ckpt), "--config", str(cfg), "--out", str(out)]) == 0
    model = build_model(
        OmegaConf.create({"name": "ldm", "arch": "ldm", "source": "diffusers", "weights": str(out)}), 0, 3, 32, "lsun"
    )
    dec = model.frozen.decoder
    assert type(dec).__name__ == ("VQModel" if name == "bedrooms" else "AutoencoderKL")
    assert dec.config.scaling_factor == pytest.approx(params.get("scale_factor", 1.0))
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(model.scheduler_config)
    assert float(sched.betas[0]) == pytest.approx(0.0015) and float(sched.betas[-1]) == pytest.approx(
        params["linear_end"]
    )
    with torch.no_grad():
        img = model.sample(1, steps=2, seed=0, batch_size=1)
    assert img.shape == (1, 3, 16, 16) and torch.isfinite(img).all()  # 8x8 latents, one 2x upsampling


def _legacy_attention(x, qkv_w, qkv_b, proj_w, proj_b, norm_w, norm_b, heads):
    """CompVis AttentionBlock with QKVAttentionLegacy: x + proj(attn(qkv(norm(x))))."""
    b, c, h, w = x.shape
    hn = torch.nn.functional.group_norm(x, 32, norm_w, norm_b, eps=1e-5).reshape(b, c, h * w)
    qkv = torch.nn.functional.conv1d(hn, qkv_w, qkv_b).reshape(b * heads, 3 * c // heads, h * w)
    q, k, v = qkv.split(c // heads, dim=1)
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / (c // heads) ** 0.5, dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, h * w)
    return x + torch.nn.functional.conv1d(a, proj_w, proj_b).reshape(b, c, h, w)


def test_fused_legacy_qkv_splits_per_head(tmp_path):
    torch.manual_seed(0)
    ckpt, cfg = _write(tmp_path, "churches", CHURCHES)
    out = convert(ckpt, cfg, tmp_path / "out")
    model = build_model(
        OmegaConf.create({"name": "ldm", "arch": "ldm", "source": "diffusers", "weights": str(out)}), 0, 3, 32, "lsun"
    )
    src = torch.load(ckpt, weights_only=False)["state_dict"]
    pre = "model.diffusion_model.middle_block.1"
    attn = model.unet.mid_block.attentions[0]
    assert attn.heads == 2  # fixed num_heads of the churches config, restored on load
    x = torch.randn(2, 64, 2, 2)
    want = _legacy_attention(
        x,
        src[f"{pre}.qkv.weight"],
        src[f"{pre}.qkv.bias"],
        src[f"{pre}.proj_out.weight"],
        src[f"{pre}.proj_out.bias"],
        src[f"{pre}.norm.weight"],
        src[f"{pre}.norm.bias"],
        2,
    )
    with torch.no_grad():
        assert torch.allclose(attn(x), want, atol=1e-5)
