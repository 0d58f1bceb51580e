"""Train the learned lab's denoiser: DDPM v-prediction with classifier-free-guidance dropout.

    state = train_denoiser(TrainConfig(steps=6000), "runs/learned_lab")   # resumes if it can

Reproducible: batch ``s`` (composites, dropped attributes, timesteps, noise) is drawn from a
generator seeded by (seed, s) alone, and the learning rate is a function of the step, so a run
killed after a checkpoint and resumed reaches bit-for-bit the state of an uninterrupted run (same
thread count). Checkpoints (``checkpoint.pt``: model, EMA, optimiser, step, loss log) are written
atomically every ``checkpoint_every`` steps and at the end.

Target: v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022), with min-SNR-gamma weights
min(snr, gamma) / (snr + 1) (Hang et al. 2023). Measured here: after 400 steps an epsilon model
had learned nothing of the prompt at high noise, where layout is decided (its loss weighs x0
errors there by the SNR, ~1e-3), so samples ignored the prompt; the v loss weighs them ~1.
Schedule: DDPM linear betas 1e-4 .. 0.02 over 1,000 steps, so any diffusers scheduler built from
``scheduler_config()`` samples the model.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from couplednoise.pipelines.learned_lab.model import NUM_VALUES, Denoiser, ModelConfig
from couplednoise.pipelines.learned_lab.world import sample_composites

SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "v_prediction",
}
CHECKPOINT = "checkpoint.pt"
LOSS_LOG = "losses.jsonl"


def atomic_write(path: Path, write) -> None:
    """``write(handle)`` into a temporary sibling of ``path``, then rename it over ``path``
    (pipelines do not import couplednoise.eval, whose runs.atomic does the same for text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_losses(path: Path, losses: list[dict]) -> None:
    """The loss log as JSON lines (rewritten whole at each checkpoint, so it matches it)."""
    text = "".join(json.dumps(r) + "\n" for r in losses).encode()
    atomic_write(path, lambda handle: handle.write(text))


def scheduler_config() -> dict:
    """The training noise schedule, for any diffusers scheduler's ``from_config``."""
    return dict(SCHEDULE)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on (stored in its checkpoint; a resume must match it)."""

    steps: int = 6000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 200
    seed: int = 0
    drop_attribute: float = 0.25  # each attribute left open independently with this probability
    drop_all: float = 0.1  # all attributes open (the unconditional model)
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    checkpoint_every: int = 200
    log_every: int = 25
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["model"] = ModelConfig.from_dict(data["model"])
        return cls(**data)

    def check(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.checkpoint_every % self.log_every:
            raise ValueError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of log_every "
                f"({self.log_every}), so a resumed run logs the same losses"
            )
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("drop_attribute", "drop_all"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of batch ``step`` of a run seeded ``seed`` (independent of all others)."""
    state = np.random.SeedSequence([seed, step]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]) >> 1)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``lr`` at the last step."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def training_batch(config: TrainConfig, step: int, alphas_cumprod: torch.Tensor):
    """(x_t [B, 3, 32, 32], t [B], codes with dropout [B, 4], target v [B, 3, 32, 32], snr [B])."""
    g = step_generator(config.seed, step)
    batch = sample_composites(config.batch_size, "train", generator=g)
    x0 = batch.images * 2 - 1
    codes = batch.codes.clone()
    null = torch.tensor(NUM_VALUES)
    open_one = torch.rand(codes.shape, generator=g) < config.drop_attribute
    open_all = torch.rand(codes.shape[0], 1, generator=g) < config.drop_all
    codes = torch.where(open_one | open_all, null.expand_as(codes), codes)
    t = torch.randint(0, len(alphas_cumprod), (config.batch_size,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
    return x_t, t, codes, v, snr


@dataclass
class TrainState:
    config: TrainConfig
    model: Denoiser
    ema: Denoiser
    optimizer: torch.optim.Optimizer
    step: int = 0
    losses: list[dict] = field(default_factory=list)  # {"step", "loss", "lr"} every log_every

    def save(self, path: Path) -> None:
        payload = {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "losses": self.losses,
        }
        atomic_write(path, lambda handle: torch.save(payload, handle))


def new_state(config: TrainConfig) -> TrainState:
    torch.manual_seed(config.seed)  # parameter initialisation
    model = Denoiser(config.model)
    ema = Denoiser(config.model)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    return TrainState(config, model, ema, optimizer)


def load_state(path: Path) -> TrainState:
    """The training state saved at ``path``."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    state = new_state(TrainConfig.from_dict(payload["config"]))
    state.model.load_state_dict(payload["model"])
    state.ema.load_state_dict(payload["ema"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.step = int(payload["step"])
    state.losses = list(payload["losses"])
    return state


def train_denoiser(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainState:
    """Train (or resume, if ``out_dir`` holds a checkpoint of the same config) to ``config.steps``.

    ``stop_after``: return after this many steps of this call (for tests of resuming).
    A checkpoint of another config is a ValueError (a resume must not silently change the run).
    """
    config.check()
    out_dir = Path(out_dir)
    path = out_dir / CHECKPOINT
    if path.exists():
        state = load_state(path)
        if state.config != config:
            raise ValueError(
                f"{path} was trained with another config ({state.config}); "
                "use a new output folder or the same options"
            )
    else:
        state = new_state(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    alphas_cumprod = DDPMScheduler(**SCHEDULE).alphas_cumprod.float()
    model, ema, optimizer = state.model, state.ema, state.optimizer
    model.train()
    end = config.steps if stop_after is None else min(config.steps, state.step + stop_after)
    bar = tqdm(
        total=config.steps, initial=state.step, disable=not progress, desc="learned-lab train"
    )
    running: list[float] = []
    params = [p for p in model.parameters()]
    ema_params = [p for p in ema.parameters()]
    while state.step < end:
        x_t, t, codes, target, snr = training_batch(config, state.step, alphas_cumprod)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, state.step)
        prediction = model(x_t, t, codes)
        weight = snr.clamp(max=config.min_snr_gamma) / (snr + 1)
        loss = (weight * (prediction - target).pow(2).mean((1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay = min(config.ema_decay, (1 + state.step) / (10 + state.step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        state.step += 1
        running.append(float(loss.detach()))
        if state.step % config.log_every == 0 or state.step == end:
            record = {
                "step": state.step,
                "loss": sum(running) / len(running),
                "lr": learning_rate(config, state.step - 1),
            }
            state.losses.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            running.clear()
        if state.step % config.checkpoint_every == 0 or state.step == end:
            state.save(path)
            write_losses(out_dir / LOSS_LOG, state.losses)
        bar.update(1)
    bar.close()
    return state
