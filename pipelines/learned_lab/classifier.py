"""Ground truth for the learned lab: one small CNN with a head per attribute.

    classifier = AttributeClassifier(); logits = classifier(images)   # images [N, 3, 32, 32] in [0, 1]
    codes = classifier.predict(images)                                 # int64 [N, 4]

Trained on the same composites as the denoiser (train split), with mild noise and blur
augmentation so that slightly soft generated images read out like real ones; its accuracy is
measured on fresh composites of the held-out split (Fashion-MNIST test images, held-out texture
rows). Training is seeded and resumable like the denoiser's (``train.step_generator``).
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
from couplednoise.pipelines.learned_lab.world import ATTRIBUTES, NUM_VALUES, sample_composites

CHECKPOINT = "classifier.pt"
ACCURACY = "accuracy.json"
EVAL_SEED = 10**9  # held-out composites for the reported accuracy: a seed no training batch uses


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class AttributeClassifier(nn.Module):
    """Images [N, 3, 32, 32] in [0, 1] -> a list of logits, one [N, n_values] per attribute.

    The feature map stays 4 x 4 before the heads (no global pooling) so position is readable.
    """

    def __init__(self, width: int = 32):
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

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(self.features(images * 2 - 1))
        return [head(h) for head in self.heads]

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
    steps: int = 5000
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    width: int = 48
    eval_size: int = 4000
    checkpoint_every: int = 500


@dataclass
class ClassifierState:
    config: ClassifierConfig
    model: AttributeClassifier
    optimizer: torch.optim.Optimizer
    step: int = 0
    accuracy: dict = field(default_factory=dict)

    def save(self, path: Path) -> None:
        payload = {
            "config": asdict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
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
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    return ClassifierState(config, model, optimizer)


def load_classifier_state(path: Path) -> ClassifierState:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    state = _new_state(ClassifierConfig(**payload["config"]))
    state.model.load_state_dict(payload["model"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.step = int(payload["step"])
    state.accuracy = dict(payload["accuracy"])
    return state


def train_classifier(
    config: ClassifierConfig, out_dir: str | Path, *, progress: bool = True
) -> ClassifierState:
    """Train (or resume) the classifier; measures held-out accuracy at the end."""
    out_dir = Path(out_dir)
    path = out_dir / CHECKPOINT
    state = load_classifier_state(path) if path.exists() else _new_state(config)
    if state.config != config:
        raise ValueError(f"{path} was trained with another config ({state.config})")
    model, optimizer = state.model, state.optimizer
    model.train()
    bar = tqdm(
        total=config.steps, initial=state.step, disable=not progress, desc="learned-lab classifier"
    )
    while state.step < config.steps:
        g = step_generator(config.seed + 7919, state.step)  # not the denoiser's batches
        batch = sample_composites(config.batch_size, "train", generator=g)
        progress_fraction = state.step / config.steps
        for group in optimizer.param_groups:
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * progress_fraction))
        logits = model(augment(batch.images, g))
        loss = sum(F.cross_entropy(z, batch.codes[:, j]) for j, z in enumerate(logits))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state.step += 1
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        bar.update(1)
        if state.step % config.checkpoint_every == 0 and state.step < config.steps:
            state.save(path)
    bar.close()
    images, codes = held_out_sample(config.eval_size)
    state.accuracy = {**accuracy(model, images, codes), "n": config.eval_size}
    state.save(path)
    text = json.dumps(state.accuracy, indent=1).encode()
    atomic_write(out_dir / ACCURACY, lambda handle: handle.write(text))
    return state
