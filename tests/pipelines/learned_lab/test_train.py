import pytest
import torch

from couplednoise.pipelines.learned_lab.model import ModelConfig
from couplednoise.pipelines.learned_lab.train import (
    TrainConfig,
    learning_rate,
    load_state,
    step_generator,
    train_denoiser,
)

TINY = ModelConfig(
    channels=(16, 16), attention=(False, True), token_dim=8, head_dim=8, norm_num_groups=8
)


def _config(**overrides):
    base = {
        "steps": 6,
        "batch_size": 2,
        "warmup": 2,
        "checkpoint_every": 2,
        "log_every": 1,
        "model": TINY,
    }
    return TrainConfig(**{**base, **overrides})


def _tensors(state):
    return [*state.model.state_dict().values(), *state.ema.state_dict().values()]


def test_a_resumed_run_reaches_the_uninterrupted_state(tmp_path):
    config = _config()
    straight = train_denoiser(config, tmp_path / "a", progress=False)
    train_denoiser(config, tmp_path / "b", progress=False, stop_after=3)  # "killed" at 3
    assert load_state(tmp_path / "b" / "checkpoint.pt").step == 3
    resumed = train_denoiser(config, tmp_path / "b", progress=False)
    assert resumed.step == straight.step == 6
    assert all(torch.equal(x, y) for x, y in zip(_tensors(straight), _tensors(resumed)))
    assert resumed.losses == straight.losses and len(straight.losses) == 6
    saved_opt = load_state(tmp_path / "b" / "checkpoint.pt").optimizer.state_dict()["state"]
    straight_opt = straight.optimizer.state_dict()["state"]
    assert all(torch.equal(saved_opt[k]["exp_avg"], straight_opt[k]["exp_avg"]) for k in saved_opt)
    # Training moved the weights, and the EMA lags them.
    fresh = train_denoiser(_config(steps=1), tmp_path / "c", progress=False, stop_after=0)
    assert fresh.step == 0
    assert not torch.equal(straight.model.unet.conv_in.weight, fresh.model.unet.conv_in.weight)
    assert not torch.equal(straight.model.unet.conv_in.weight, straight.ema.unet.conv_in.weight)


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    train_denoiser(_config(steps=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match="another config"):
        train_denoiser(_config(steps=2, lr=1e-3), tmp_path, progress=False)


def test_bad_configs_are_refused_before_work(tmp_path):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        train_denoiser(_config(batch_size=0), tmp_path, progress=False)
    with pytest.raises(ValueError, match="multiple of log_every"):
        train_denoiser(_config(checkpoint_every=3, log_every=2), tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_batches_and_learning_rate_depend_only_on_seed_and_step():
    a = torch.rand(3, generator=step_generator(0, 5))
    assert torch.equal(a, torch.rand(3, generator=step_generator(0, 5)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(0, 6)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(1, 5)))
    config = TrainConfig(steps=100, warmup=10, lr=1.0)
    assert learning_rate(config, 0) == pytest.approx(0.1)
    assert learning_rate(config, 10) == pytest.approx(1.0)
    assert learning_rate(config, 100) == pytest.approx(0.1)
