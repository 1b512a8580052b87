"""Tiny random-init diffusers pipelines with the layouts of the paper's GEN models (offline).

- ``ldm``: ``LDMPipeline`` layout — ``VQModel`` autoencoder + ``UNet2DModel`` + DDIM (the
  unconditional latent diffusion of Rombach et al. 2022 used for LSUN churches/bedroom);
- ``sd``: ``StableDiffusionPipeline`` layout — ``AutoencoderKL`` + ``CLIPTextModel`` +
  ``UNet2DConditionModel`` with cross-attention + DDIM.
Same classes as the real checkpoints, a few thousand times smaller, so every code path (loading
a saved folder included) runs in tests without a download. The SD tokenizer is a character-level
CLIP BPE tokenizer built from an in-memory vocabulary (no merges file needed).
"""

from __future__ import annotations

import string

import torch

TEXT_LEN = 16


def tiny_tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TEXT_LEN)


COMMON = dict(layers_per_block=1, block_out_channels=(32, 64), norm_num_groups=8)  # both UNets


def tiny_pipeline(arch: str, seed: int = 0):
    """A random-init diffusers pipeline of ``arch`` (``ldm`` or ``sd``); 16x16 RGB images."""
    torch.manual_seed(seed)
    ae = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=16,
    )
    if arch == "ldm":
        return _tiny_ldm(ae)
    if arch == "sd":
        return _tiny_sd(ae)
    raise ValueError(f"no tiny pipeline for arch '{arch}' (ldm | sd)")


def _tiny_ldm(ae: dict):
    from diffusers import DDIMScheduler, LDMPipeline, UNet2DModel, VQModel

    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        attention_head_dim=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        **COMMON,
    )
    vq = VQModel(latent_channels=3, num_vq_embeddings=32, scaling_factor=1.0, **ae)
    return LDMPipeline(vqvae=vq.eval(), unet=unet.eval(), scheduler=DDIMScheduler())


def _tiny_sd(ae: dict):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tiny_tokenizer()
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok.get_vocab()),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TEXT_LEN,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=32,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        **COMMON,
    )
    vae = AutoencoderKL(latent_channels=4, **ae)
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text.eval(),
        tokenizer=tok,
        unet=unet.eval(),
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
