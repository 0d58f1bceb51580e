"""Ground truth for the learned lab: a small CNN with a head per attribute, and a second CNN
that reads the object class from a crop around the object's position.

    classifier = AttributeClassifier(48, 32); logits = classifier(images)  # [N, 3, 32, 32] in [0, 1]
    codes = classifier.predict(images)                                      # int64 [N, 4]

Trained in two stages on the same composites as the denoiser (train split), with mild noise and
blur augmentation so that slightly soft generated images read out like real ones: first the
whole-image CNN (every head), then the object-crop CNN on crops at the true position (at
prediction the crop is taken where the position head says). The crop stage exists because the
whole-image CNN reached only 0.93 on the object class: it must learn each garment at four
positions; a crop removes that (the committed pair: 0.962, docs/learned_lab.md).
Accuracy is measured on fresh composites of the held-out split (Fashion-MNIST test images,
held-out texture rows). Training is seeded and resumable like the denoiser's
(``train.step_generator``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from couplednoise.pipelines.learned_lab.train import atomic_write, step_generator
from couplednoise.pipelines.learned_lab.world import (
    ATTRIBUTES,
    NUM_VALUES,
    object_centres,
    sample_composites,
)

CHECKPOINT = "classifier.pt"
ACCURACY = "accuracy.json"
EVAL_SEED = 10**9  # held-out composites for the reported accuracy: a seed no training batch uses
OBJECT_CROP = 24  # the largest object (22 px) with its +-1 px jitter
_POSITION = list(ATTRIBUTES).index("position")
_CROP_PAD = 2  # a crop at any position overhangs the canvas by one pixel on one side


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def object_crops(images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Crops [N, 3, 24, 24] of images [N, 3, 32, 32] centred on each position code's centre
    (positions int64 [N]; outside the canvas reads as 0)."""
    padded = F.pad(images, (_CROP_PAD,) * 4)
    corners = object_centres()[positions] - OBJECT_CROP // 2 + _CROP_PAD  # [N, 2] (x, y)
    offsets = torch.arange(OBJECT_CROP)
    xs = (corners[:, 0, None] + offsets)[:, None, None, :]  # [N, 1, 1, 24]
    ys = (corners[:, 1, None] + offsets)[:, None, :, None]  # [N, 1, 24, 1]
    n = images.shape[0]
    batch = torch.arange(n)[:, None, None, None]
    channels = torch.arange(images.shape[1])[None, :, None, None]
    return padded[batch, channels, ys, xs]


class ObjectCropNet(nn.Module):
    """Object crops [N, 3, 24, 24] in [0, 1] -> object logits [N, n_objects]."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            _block(3, width),
            nn.MaxPool2d(2),
            _block(width, 2 * width),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (OBJECT_CROP // 4) ** 2, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(256, NUM_VALUES[0]),
        )

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(crops * 2 - 1)


class AttributeClassifier(nn.Module):
    """Images [N, 3, 32, 32] in [0, 1] -> a list of logits, one [N, n_values] per attribute.

    The whole-image feature map stays 4 x 4 before the heads (no global pooling) so position is
    readable. With ``object_width`` the object logits come from an ``ObjectCropNet`` on the
    crop at the predicted position instead of the whole-image head.
    """

    def __init__(self, width: int = 32, object_width: int | None = None):
        super().__init__()
        self.features = nn.Sequential(
            _block(3, width),
            nn.MaxPool2d(2),
            _block(width, 2 * width),
            nn.MaxPool2d(2),
            _block(2 * width, 4 * width),
            nn.MaxPool2d(2),
        )
        self.trunk = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * width * 16, 256), nn.ReLU(inplace=True), nn.Dropout(0.2)
        )
        self.heads = nn.ModuleList(nn.Linear(256, n) for n in NUM_VALUES)
        self.object_net = ObjectCropNet(object_width) if object_width else None

    def base_parameters(self) -> list[nn.Parameter]:
        """The whole-image CNN's parameters (the first training stage)."""
        return [*self.features.parameters(), *self.trunk.parameters(), *self.heads.parameters()]

    def base_logits(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every head of the whole-image CNN."""
        h = self.trunk(self.features(images * 2 - 1))
        return [head(h) for head in self.heads]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        logits = self.base_logits(images)
        if self.object_net is not None:
            crops = object_crops(images, logits[_POSITION].argmax(1))
            logits[0] = self.object_net(crops)
        return logits

    @torch.no_grad()
    def predict(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Attribute codes int64 [N, 4] (argmax per head; evaluation mode, no gradients)."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, 32, 32):
            raise ValueError(f"images must be [N, 3, 32, 32] in [0, 1], got {list(images.shape)}")
        was_training = self.training
        self.eval()
        try:
            parts = []
            for start in range(0, images.shape[0], batch_size):
                x = images[start : start + batch_size].to(torch.float32)
                parts.append(torch.stack([z.argmax(1) for z in self(x)], 1))
            return torch.cat(parts) if parts else torch.zeros(0, len(NUM_VALUES), dtype=torch.int64)
        finally:
            self.train(was_training)


def accuracy(classifier: AttributeClassifier, images: torch.Tensor, codes: torch.Tensor) -> dict:
    """Per-attribute accuracy {name: fraction} of ``classifier`` on labelled images."""
    predicted = classifier.predict(images)
    hits = (predicted == codes).double().mean(0).tolist()
    return dict(zip(ATTRIBUTES, hits))


def held_out_sample(n: int, seed: int = EVAL_SEED):
    """``n`` fresh composites of the test split (images [n, 3, 32, 32], codes [n, 4])."""
    batch = sample_composites(n, "test", generator=torch.Generator().manual_seed(seed))
    return batch.images, batch.codes


@dataclass(frozen=True)
class ClassifierConfig:
    """``steps`` of the whole-image CNN, then ``object_steps`` of the object-crop CNN (width
    ``object_width``, batch ``object_batch_size``; 0 steps: no crop CNN)."""

    steps: int = 5000
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    width: int = 48
    eval_size: int = 4000
    checkpoint_every: int = 500
    object_steps: int = 0
    object_width: int = 32
    object_batch_size: int = 128

    @property
    def total_steps(self) -> int:
        return self.steps + self.object_steps


@dataclass
class ClassifierState:
    config: ClassifierConfig
    model: AttributeClassifier
    optimizer: torch.optim.Optimizer
    object_optimizer: torch.optim.Optimizer | None = None
    step: int = 0
    accuracy: dict = field(default_factory=dict)

    def save(self, path: Path) -> None:
        payload = {
            "config": asdict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "object_optimizer": self.object_optimizer and self.object_optimizer.state_dict(),
            "step": self.step,
            "accuracy": self.accuracy,
        }
        atomic_write(path, lambda handle: torch.save(payload, handle))


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mild noise (std up to 0.04) and, for a third of the images, a 3 x 3 blur."""
    n = images.shape[0]
    noise = torch.randn(images.shape, generator=generator)
    level = torch.rand(n, 1, 1, 1, generator=generator) * 0.04
    blur_pick = (torch.rand(n, 1, 1, 1, generator=generator) < 1 / 3).float()
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None]) / 16
    blurred = F.conv2d(
        F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel.expand(3, 1, 3, 3), groups=3
    )
    mixed = blur_pick * blurred + (1 - blur_pick) * images
    return (mixed + level * noise).clamp(0, 1)


def _new_state(config: ClassifierConfig) -> ClassifierState:
    torch.manual_seed(config.seed)
    model = AttributeClassifier(config.width)
    if config.object_steps:
        # Its own seed, and the global generator (dropout's) left as a one-stage run leaves it,
        # so the first stage trains the same whole-image CNN with or without a crop stage.
        with torch.random.fork_rng():
            torch.manual_seed(config.seed + 1)
            model.object_net = ObjectCropNet(config.object_width)
    optimizer = torch.optim.AdamW(model.base_parameters(), lr=config.lr, weight_decay=1e-4)
    object_optimizer = None
    if model.object_net is not None:
        object_optimizer = torch.optim.AdamW(
            model.object_net.parameters(), lr=config.lr, weight_decay=1e-4
        )
    return ClassifierState(config, model, optimizer, object_optimizer)


def load_classifier_state(path: Path) -> ClassifierState:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    state = _new_state(ClassifierConfig(**payload["config"]))
    state.model.load_state_dict(payload["model"])
    state.optimizer.load_state_dict(payload["optimizer"])
    if state.object_optimizer is not None:
        state.object_optimizer.load_state_dict(payload["object_optimizer"])
    state.step = int(payload["step"])
    state.accuracy = dict(payload["accuracy"])
    return state


def _cosine_lr(optimizer: torch.optim.Optimizer, lr: float, fraction: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * fraction))


def _base_step(state: ClassifierState) -> torch.Tensor:
    """One step of the whole-image CNN on every head."""
    config, model = state.config, state.model
    g = step_generator(config.seed + 7919, state.step)  # not the denoiser's batches
    batch = sample_composites(config.batch_size, "train", generator=g)
    _cosine_lr(state.optimizer, config.lr, state.step / config.steps)
    model.train()
    logits = model.base_logits(augment(batch.images, g))
    loss = sum(F.cross_entropy(z, batch.codes[:, j]) for j, z in enumerate(logits))
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    return loss


def _object_step(state: ClassifierState) -> torch.Tensor:
    """One step of the object-crop CNN on crops at the true positions."""
    config, net = state.config, state.model.object_net
    step = state.step - config.steps
    g = step_generator(config.seed + 104729, step)  # batches of their own
    batch = sample_composites(config.object_batch_size, "train", generator=g)
    _cosine_lr(state.object_optimizer, config.lr, step / config.object_steps)
    net.train()
    crops = object_crops(augment(batch.images, g), batch.codes[:, _POSITION])
    loss = F.cross_entropy(net(crops), batch.codes[:, 0])
    state.object_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.object_optimizer.step()
    return loss


def train_classifier(
    config: ClassifierConfig, out_dir: str | Path, *, progress: bool = True
) -> ClassifierState:
    """Train (or resume) the classifier; measures held-out accuracy at the end."""
    out_dir = Path(out_dir)
    path = out_dir / CHECKPOINT
    state = load_classifier_state(path) if path.exists() else _new_state(config)
    if state.config != config:
        raise ValueError(f"{path} was trained with another config ({state.config})")
    bar = tqdm(
        total=config.total_steps,
        initial=state.step,
        disable=not progress,
        desc="learned-lab classifier",
    )
    while state.step < config.total_steps:
        loss = _base_step(state) if state.step < config.steps else _object_step(state)
        state.step += 1
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        bar.update(1)
        if state.step % config.checkpoint_every == 0 and state.step < config.total_steps:
            state.save(path)
    bar.close()
    images, codes = held_out_sample(config.eval_size)
    state.accuracy = {**accuracy(state.model, images, codes), "n": config.eval_size}
    state.save(path)
    text = json.dumps(state.accuracy, indent=1).encode()
    atomic_write(out_dir / ACCURACY, lambda handle: handle.write(text))
    return state
