"""Default backbone ids (no imports, so the CLI can show them without loading torch)."""

DEFAULT_CLIP_MODEL = (
    "ViT-L-14-quickgelu"  # OpenAI CLIP ViT-L/14, as torchmetrics' CLIPScore default
)
DEFAULT_CLIP_PRETRAINED = "openai"
DEFAULT_DINO = "facebook/dinov2-base"
DEFAULT_PICKSCORE = "yuvalkirstain/PickScore_v1"
DEFAULT_PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
