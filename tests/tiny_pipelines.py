"""Tiny random-weight diffusers pipelines beyond SD1.5 / SDXL / SD3 / FLUX, built offline.

Configs follow ``get_dummy_components()`` in diffusers' tests/pipelines/<family>/ (PixArt-Sigma,
Sana, AuraFlow, HunyuanDiT, Kandinsky 2.2, AnimateDiff, Wan, LTX, CogVideoX), with the hub
tokenizers replaced by in-memory ones (tests/tiny_models.py) and, where a pipeline's default size
is 1,024 px, a VAE with scale factor 32 (6 levels of 4 channels) so that the default size gives
a 32 x 32 latent grid; the matrix never decodes those (output_type="latent").
Image-conditioned variants share the components of their text-to-image pipeline.

    pipe = TINY_PIPELINES["pixart_sigma"]()      # a new pipeline, eval mode, CPU float32
"""

from __future__ import annotations

import torch

from tests.tiny_models import (
    TEXT_HIDDEN,
    _t5_encoder,
    _text_config,
    _unet,
    _vae,
    tiny_flux,
    tiny_sd15,
    tiny_sdxl,
    tiny_t5_tokenizer,
    tiny_tokenizer,
)


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _vae32(latent_channels: int = 4, **kwargs):
    """AutoencoderKL with 6 levels: vae_scale_factor 32 (1,024 px -> 32 x 32 latents)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(2)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 6,
        up_block_types=["UpDecoderBlock2D"] * 6,
        block_out_channels=(4,) * 6,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=2,
        **kwargs,
    ).eval()


def tiny_gemma_tokenizer():
    """A Gemma tokenizer over printable ASCII characters (no merges), built in memory."""
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "\u2581"]
    vocab = {t: i for i, t in enumerate([*specials, *(chr(c) for c in range(33, 127))])}
    return GemmaTokenizer(vocab=vocab, merges=[])


def tiny_bert_tokenizer():
    """A BERT WordPiece tokenizer over single characters (and their ## continuations)."""
    from transformers import BertTokenizer

    chars = [chr(c) for c in range(33, 127)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)]
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)})


# --- image pipelines ----------------------------------------------------------------------------


def tiny_pixart_sigma():
    """PixArtSigmaPipeline; transformer sample_size 32 so that binning uses its 256-px bins."""
    from diffusers import DDIMScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=32,
        num_layers=1,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=TEXT_HIDDEN,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    ).eval()
    tokenizer = tiny_t5_tokenizer()
    return _quiet(
        PixArtSigmaPipeline(
            transformer=transformer,
            vae=_vae(4),
            scheduler=DDIMScheduler(steps_offset=1),
            text_encoder=_t5_encoder(len(tokenizer), TEXT_HIDDEN),
            tokenizer=tokenizer,
        )
    )


def _dc_ae32():
    """AutoencoderDC with 6 levels of ResBlocks: scale factor 32, as Sana's DC-AE."""
    from diffusers import AutoencoderDC

    torch.manual_seed(0)
    return AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock",) * 6,
        decoder_block_types=("ResBlock",) * 6,
        encoder_block_out_channels=(4,) * 6,
        decoder_block_out_channels=(4,) * 6,
        encoder_qkv_multiscales=((),) * 6,
        decoder_qkv_multiscales=((),) * 6,
        encoder_layers_per_block=(1,) * 6,
        decoder_layers_per_block=(1,) * 6,
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    ).eval()


def tiny_sana():
    """SanaPipeline; transformer sample_size 16 (512-px bins), a DC-AE with scale factor 32."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(0)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=16,
    ).eval()
    tokenizer = tiny_gemma_tokenizer()
    torch.manual_seed(0)
    text_encoder = Gemma2Model(
        Gemma2Config(
            head_dim=16,
            hidden_size=8,
            initializer_range=0.02,
            intermediate_size=64,
            max_position_embeddings=8192,
            model_type="gemma2",
            num_attention_heads=2,
            num_hidden_layers=1,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            attn_implementation="eager",
        )
    ).eval()
    return _quiet(
        SanaPipeline(
            transformer=transformer,
            vae=_dc_ae32(),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
    )


def tiny_aura_flow():
    """AuraFlowPipeline (default 1,024 px from its signature), scale factor 32."""
    from diffusers import (
        AuraFlowPipeline,
        AuraFlowTransformer2DModel,
        FlowMatchEulerDiscreteScheduler,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    transformer = AuraFlowTransformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=1,
        num_single_dit_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        out_channels=4,
        pos_embed_max_size=256,
    ).eval()
    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(3)
    config = UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_layers=1, num_heads=4
    )
    return _quiet(
        AuraFlowPipeline(
            transformer=transformer,
            vae=_vae32(4),
            scheduler=FlowMatchEulerDiscreteScheduler(),
            text_encoder=UMT5EncoderModel(config).eval(),
            tokenizer=tokenizer,
        )
    )


def tiny_hunyuan_dit():
    """HunyuanDiTPipeline (binning to its standard shapes, >= 768 px); scale factor 8, which its
    __call__ assumes (its rotary grid is height // 8 // patch_size)."""
    from diffusers import DDPMScheduler, HunyuanDiT2DModel, HunyuanDiTPipeline
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    transformer = HunyuanDiT2DModel(
        sample_size=16,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        in_channels=4,
        cross_attention_dim=32,
        cross_attention_dim_t5=32,
        pooled_projection_dim=16,
        hidden_size=24,
        activation_fn="gelu-approximate",
    ).eval()
    tokenizer = tiny_bert_tokenizer()
    torch.manual_seed(1)
    bert = BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=512,
        )
    ).eval()
    t5_tokenizer = tiny_t5_tokenizer()
    return _quiet(
        HunyuanDiTPipeline(
            transformer=transformer,
            vae=_vae(4),
            scheduler=DDPMScheduler(),
            text_encoder=bert,
            tokenizer=tokenizer,
            text_encoder_2=_t5_encoder(len(t5_tokenizer), 32),
            tokenizer_2=t5_tokenizer,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    )


def tiny_kandinsky22_decoder():
    """KandinskyV22Pipeline (the decoder: image embeddings in, MoVQ scale factor 2)."""
    from diffusers import DDIMScheduler, KandinskyV22Pipeline, UNet2DConditionModel, VQModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        in_channels=4,
        out_channels=8,  # mean and variance
        addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(32, 64),
        layers_per_block=1,
        encoder_hid_dim=32,
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=32,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
    ).eval()
    torch.manual_seed(0)
    movq = VQModel(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        in_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        out_channels=3,
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        vq_embed_dim=4,
    ).eval()
    scheduler = DDIMScheduler(
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return _quiet(KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq))


def tiny_ldm():
    """LDMTextToImagePipeline: one image per prompt (no num_images_per_prompt), draws in __call__."""
    from diffusers import DDIMScheduler, LDMTextToImagePipeline
    from transformers import CLIPTextModel

    torch.manual_seed(1)
    return _quiet(
        LDMTextToImagePipeline(
            vqvae=_vae(4),
            bert=CLIPTextModel(_text_config()).eval(),
            tokenizer=tiny_tokenizer(),
            unet=_unet(cross_attention_dim=TEXT_HIDDEN, attention_head_dim=4),
            scheduler=DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        )
    )


# --- video pipelines ----------------------------------------------------------------------------


def tiny_animatediff():
    """AnimateDiffPipeline: a tiny UNet + MotionAdapter, CLIP with the byte-level tokenizer."""
    from diffusers import (
        AnimateDiffPipeline,
        AutoencoderKL,
        DDIMScheduler,
        MotionAdapter,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 8),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        norm_num_groups=2,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=2,
    ).eval()
    torch.manual_seed(0)
    adapter = MotionAdapter(
        block_out_channels=(8, 8),
        motion_layers_per_block=1,
        motion_norm_num_groups=2,
        motion_num_attention_heads=4,
    )
    torch.manual_seed(1)
    pipe = AnimateDiffPipeline(
        unet=unet,
        scheduler=DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False
        ),
        vae=vae,
        motion_adapter=adapter,
        text_encoder=CLIPTextModel(_text_config()).eval(),
        tokenizer=tiny_tokenizer(),
        feature_extractor=None,
        image_encoder=None,
    )
    pipe.unet.eval()
    return _quiet(pipe)


def tiny_wan():
    """WanPipeline: AutoencoderKLWan (spatial 8, temporal 4), a 2-layer WanTransformer3DModel."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()
    tokenizer = tiny_t5_tokenizer()
    return _quiet(
        WanPipeline(
            transformer=transformer,
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
            text_encoder=_t5_encoder(len(tokenizer), 32),
            tokenizer=tokenizer,
            transformer_2=None,
        )
    )


def tiny_ltx():
    """LTXPipeline: packed video latents [B, frames * h * w, C], AutoencoderKLLTXVideo."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=32,
    ).eval()
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    ).eval()
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    tokenizer = tiny_t5_tokenizer()
    return _quiet(
        LTXPipeline(
            transformer=transformer,
            vae=vae,
            scheduler=FlowMatchEulerDiscreteScheduler(),
            text_encoder=_t5_encoder(len(tokenizer), 32),
            tokenizer=tokenizer,
        )
    )


def tiny_cogvideox():
    """CogVideoXPipeline: latents [B, frames, C, h, w]; it makes one video per prompt."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
        DDIMScheduler,
    )

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=1,
        sample_width=2,
        sample_height=2,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=16,
    ).eval()
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    ).eval()
    tokenizer = tiny_t5_tokenizer()
    return _quiet(
        CogVideoXPipeline(
            transformer=transformer,
            vae=vae,
            scheduler=DDIMScheduler(),
            text_encoder=_t5_encoder(len(tokenizer), 32),
            tokenizer=tokenizer,
        )
    )


# --- variants sharing components ----------------------------------------------------------------


def variant(pipe, class_name: str, **extra):
    """A pipeline of diffusers class ``class_name`` built from ``pipe``'s components."""
    import diffusers

    cls = getattr(diffusers, class_name)
    return _quiet(cls(**{**pipe.components, **extra}))


def tiny_flux_kontext():
    """FluxKontextPipeline on the tiny FLUX components with a 5-level VAE (scale factor 16), so
    its default max_area of 1,024**2 px gives a 64 x 64 latent grid (1,024 tokens)."""
    from diffusers import AutoencoderKL

    flux = tiny_flux()

    torch.manual_seed(2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 5,
        up_block_types=["UpDecoderBlock2D"] * 5,
        block_out_channels=(8,) * 5,
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    ).eval()
    return variant(flux, "FluxKontextPipeline", vae=vae, image_encoder=None, feature_extractor=None)


TINY_PIPELINES = {
    "sd15": tiny_sd15,
    "sdxl": tiny_sdxl,
    "flux": tiny_flux,
    "flux_kontext": tiny_flux_kontext,
    "pixart_sigma": tiny_pixart_sigma,
    "sana": tiny_sana,
    "aura_flow": tiny_aura_flow,
    "hunyuan_dit": tiny_hunyuan_dit,
    "kandinsky22": tiny_kandinsky22_decoder,
    "ldm": tiny_ldm,
    "animatediff": tiny_animatediff,
    "wan": tiny_wan,
    "ltx": tiny_ltx,
    "cogvideox": tiny_cogvideox,
}
