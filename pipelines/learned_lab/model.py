"""The learned lab's denoiser: a diffusers UNet2DConditionModel and a small prompt encoder.

The prompt encoder maps attribute codes [B, 4] (value index, or ``null`` = the number of values
for an attribute the prompt leaves open) to one token per attribute, [B, 4, D], from one learned
embedding table per attribute plus a learned attribute-slot embedding. The UNet reads the tokens
twice, as Stable Diffusion's UNet reads its text tokens: by cross-attention (``encoder_hidden_states``)
at its lower resolutions, and flattened through its ``class_embed_type="projection"`` embedding,
added to the timestep embedding. All-null codes are the unconditional model of classifier-free
guidance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from diffusers import ConfigMixin, ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from torch import nn

from couplednoise.pipelines.learned_lab.world import NUM_VALUES, SIZE


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the UNet and the prompt encoder (the defaults are the committed model's)."""

    channels: tuple[int, ...] = (32, 64, 64)
    attention: tuple[bool, ...] = (False, False, True)  # cross-attention blocks per level
    layers_per_block: int = 1
    token_dim: int = 64
    head_dim: int = 32
    norm_num_groups: int = 32

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = dict(data)
        data["channels"] = tuple(data["channels"])
        data["attention"] = tuple(data["attention"])
        return cls(**data)


def null_codes(n: int) -> torch.Tensor:
    """All-open codes int64 [n, 4]: the unconditional prompt."""
    return torch.tensor(NUM_VALUES, dtype=torch.int64).expand(n, -1).clone()


class PromptEncoder(ModelMixin, ConfigMixin):
    """Attribute codes int64 [B, 4] (null = len(values)) -> tokens float [B, 4, token_dim].

    A diffusers model (``save_pretrained`` / ``from_pretrained``, safetensors)."""

    @register_to_config
    def __init__(self, token_dim: int = 64, num_values: tuple[int, ...] = NUM_VALUES):
        super().__init__()
        if tuple(num_values) != NUM_VALUES:
            raise ValueError(
                f"this prompt encoder was built for attributes with {tuple(num_values)} values; "
                f"the learned lab's world has {NUM_VALUES}"
            )
        self.tables = nn.ModuleList(nn.Embedding(n + 1, token_dim) for n in NUM_VALUES)
        self.slots = nn.Parameter(torch.zeros(len(NUM_VALUES), token_dim))
        for table in self.tables:
            nn.init.normal_(table.weight, std=1.0)
        nn.init.normal_(self.slots, std=1.0)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        tokens = [table(codes[:, j]) for j, table in enumerate(self.tables)]
        return torch.stack(tokens, 1) + self.slots


def build_unet(config: ModelConfig) -> UNet2DConditionModel:
    """A pixel-space UNet2DConditionModel [B, 3, 32, 32]: ResNet blocks, cross-attention to the
    prompt tokens at the levels ``config.attention`` marks (and in the middle block), and the
    projection class embedding."""
    if len(config.attention) != len(config.channels):
        raise ValueError(
            f"attention ({config.attention}) needs one flag per level of channels {config.channels}"
        )
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention))
    # diffusers' UNet2DConditionModel reads ``attention_head_dim`` as the number of heads.
    heads = tuple(max(1, c // config.head_dim) for c in config.channels)
    return UNet2DConditionModel(
        sample_size=SIZE,
        in_channels=3,
        out_channels=3,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=config.channels,
        layers_per_block=config.layers_per_block,
        cross_attention_dim=config.token_dim,
        attention_head_dim=heads,
        norm_num_groups=config.norm_num_groups,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=config.token_dim * len(NUM_VALUES),
    )


class Denoiser(nn.Module):
    """UNet + prompt encoder: the model output (v, see train.py) for x_t [B, 3, 32, 32] at t [B]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.unet = build_unet(config)
        self.prompt_encoder = PromptEncoder(config.token_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        tokens = self.prompt_encoder(codes)
        return self.unet(x, t, encoder_hidden_states=tokens, class_labels=tokens.flatten(1)).sample
