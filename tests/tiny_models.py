"""Tiny random-weight SD1.5 / SDXL / SD3 pipelines, built offline, at real latent shapes.

Shapes follow the real families where it matters for coupling: a 4-level VAE (vae_scale_factor 8),
4 latent channels for SD1.5 / SDXL and 16 for SD3, default size 64 x 64 pixels (8 x 8 latents).
Everything else is shrunk so that a 2-step call on a batch of 4 takes well under a second on CPU.
The CLIP tokenizers use a byte-level vocabulary built in memory and SD3's T5 tokenizer a tiny
character-level Unigram vocabulary (no hub access; see /work/shared/OFFLINE.md).

    pipe = tiny_sd15()                  # StableDiffusionPipeline, DDIM, eval mode, CPU float32
    pipe = tiny_sdxl(); tiny_sd3(); tiny_flux()   # Euler / flow-match Euler defaults
    path = save_tiny(pipe, tmp_path)    # save_pretrained(safe_serialization=True); returns the dir
    clip = save_tiny_open_clip(tmp_path / "clip")   # load_clip(f"local-dir:{clip}", None)
    with capture_denoiser_inputs(pipe) as inputs: pipe(...)   # inputs[0]: first denoiser input
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

DEFAULT_SIZE = 64  # pixels; latents are DEFAULT_SIZE // 8
TEXT_HIDDEN = 32
_VAE_BLOCKS = (8, 8, 8, 8)  # 4 levels -> vae_scale_factor 8, as in the real VAEs


def byte_vocab() -> dict[str, int]:
    """CLIP-style byte-level vocabulary: 256 chars, 256 end-of-word chars, 2 specials (514)."""
    # GPT-2 / CLIP byte-to-unicode table (printable stand-ins for the 256 byte values).
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def tiny_tokenizer():
    """A CLIPTokenizer with the byte-level vocabulary and no merges (max length 77)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=77)


def tiny_t5_tokenizer():
    """A T5 (Unigram) tokenizer over printable ASCII characters, built in memory."""
    from transformers import T5Tokenizer

    chars = [(chr(c), -3.0) for c in range(32, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0), *chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _t5_encoder(vocab_size: int, d_model: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(3)
    config = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_ff=37, d_kv=8, num_layers=2, num_heads=4
    )
    return T5EncoderModel(config).eval()


def _text_config(projection_dim: int = TEXT_HIDDEN):
    from transformers import CLIPTextConfig

    vocab = byte_vocab()
    return CLIPTextConfig(
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(vocab),
        projection_dim=projection_dim,
        hidden_act="gelu",
    )


def _text_encoder(with_projection: bool = False):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(1)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(_text_config()).eval()


def _vae(latent_channels: int, **kwargs):
    from diffusers import AutoencoderKL

    torch.manual_seed(2)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(_VAE_BLOCKS),
        up_block_types=["UpDecoderBlock2D"] * len(_VAE_BLOCKS),
        block_out_channels=_VAE_BLOCKS,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=DEFAULT_SIZE,
        **kwargs,
    ).eval()


def _unet(**kwargs):
    """A 2-level UNet 4 -> 4 channels at the 8 x 8 latent grid; ``kwargs``: the family's parts."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=DEFAULT_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        **kwargs,
    ).eval()


# SD1.5 / SDXL noise schedule, and the SD3 / Flux VAE (16 channels, shifted and scaled latents)
_SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
_FLOW_VAE = {
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "shift_factor": 0.0609,
    "scaling_factor": 1.5035,
}


def tiny_sd15(scheduler=None):
    """StableDiffusionPipeline: UNet 4 -> 4 channels, latents [4, 8, 8] at 64 x 64, DDIM default."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    unet = _unet(cross_attention_dim=TEXT_HIDDEN, attention_head_dim=4)
    pipe = StableDiffusionPipeline(
        unet=unet,
        scheduler=scheduler
        or DDIMScheduler(**_SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        vae=_vae(4),
        text_encoder=_text_encoder(),
        tokenizer=tiny_tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl(scheduler=None):
    """StableDiffusionXLPipeline: two CLIP encoders, text-time conditioning, latents [4, 8, 8]."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    unet = _unet(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + TEXT_HIDDEN,
        cross_attention_dim=2 * TEXT_HIDDEN,
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        scheduler=scheduler
        or EulerDiscreteScheduler(**_SD_BETAS, steps_offset=1, timestep_spacing="leading"),
        vae=_vae(4),
        text_encoder=_text_encoder(),
        text_encoder_2=_text_encoder(with_projection=True),
        tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sd3(scheduler=None):
    """StableDiffusion3Pipeline: 16 latent channels, latents [16, 8, 8], flow-match Euler."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=DEFAULT_SIZE // 8,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=2 * TEXT_HIDDEN,
        pooled_projection_dim=2 * TEXT_HIDDEN,
    ).eval()
    t5_tokenizer = tiny_t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(16, **_FLOW_VAE),
        text_encoder=_text_encoder(with_projection=True),
        text_encoder_2=_text_encoder(with_projection=True),
        text_encoder_3=_t5_encoder(len(t5_tokenizer), 2 * TEXT_HIDDEN),
        tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(),
        tokenizer_3=t5_tokenizer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_flux(scheduler=None):
    """FluxPipeline: 16 latent channels packed into [(h/2)(w/2), 64] tokens, CLIP + T5 encoders."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        out_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_HIDDEN,
        pooled_projection_dim=TEXT_HIDDEN,
        axes_dims_rope=[4, 4, 8],
    ).eval()
    t5_tokenizer = tiny_t5_tokenizer()
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=scheduler or FlowMatchEulerDiscreteScheduler(),
        vae=_vae(16, **_FLOW_VAE),
        text_encoder=_text_encoder(),
        tokenizer=tiny_tokenizer(),
        text_encoder_2=_t5_encoder(len(t5_tokenizer), TEXT_HIDDEN),
        tokenizer_2=t5_tokenizer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


BUILDERS = {"sd15": tiny_sd15, "sdxl": tiny_sdxl, "sd3": tiny_sd3}


def save_tiny(pipe, path: str | Path) -> Path:
    """Save ``pipe`` as a diffusers folder with safetensors weights; returns the folder."""
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def save_tiny_open_clip(path: str | Path) -> Path:
    """A tiny random-weight open_clip model saved as a ``local-dir:`` folder (config + weights).

    Its preprocessing mean / std are not CLIP's, so a test sees whether they are applied.
    """
    import open_clip

    path = Path(path)
    config = {
        "model_cfg": {
            "embed_dim": 16,
            "vision_cfg": {
                "image_size": 32,
                "layers": 1,
                "width": 32,
                "head_width": 16,
                "patch_size": 8,
            },
            "text_cfg": {
                "context_length": 77,
                "vocab_size": 49408,
                "width": 32,
                "heads": 2,
                "layers": 1,
            },
        },
        "preprocess_cfg": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(1)
    model = open_clip.create_model(f"local-dir:{path}", load_weights=False)
    torch.save(model.state_dict(), path / "open_clip_pytorch_model.bin")
    return path


def with_scheduler(pipe, scheduler):
    """A new pipeline of the same class sharing ``pipe``'s modules, with ``scheduler``.

    ``scheduler`` is a scheduler instance or class (built from ``pipe.scheduler.config``).
    """
    if isinstance(scheduler, type):
        scheduler = scheduler.from_config(pipe.scheduler.config)
    new = type(pipe)(**{**pipe.components, "scheduler": scheduler})
    new.set_progress_bar_config(disable=True)
    return new


@contextlib.contextmanager
def capture_denoiser_inputs(pipe):
    """Record the noisy input of every denoiser call: yields a list filled with detached copies.

    The input is the UNet's ``sample`` (first positional argument) or the transformer's
    ``hidden_states``; ``inputs[0]`` is what the first step saw (CFG-doubled where CFG is on).
    """
    module = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    inputs: list[torch.Tensor] = []

    def hook(_module, args, kwargs):
        x = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        inputs.append(x.detach().clone())

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield inputs
    finally:
        handle.remove()
