"""MODEL_CARD.md of the learned lab's weights, written by ``export_weights`` from the training
record (configs, steps, loss curve), the classifier's held-out accuracy and, when given, the
quality check's figures (``couplednoise learned-lab check --json``)."""

from __future__ import annotations


def _ci(entry: dict | None) -> str:
    if not entry:
        return "-"
    return f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}] (n = {entry['n']})"


def _loss_at(losses: list[dict], fraction: float) -> str:
    if not losses:
        return "-"
    record = losses[min(len(losses) - 1, int(fraction * len(losses)))]
    return f"{record['loss']:.4f} (step {record['step']})"


def _crop_stage(classifier: dict) -> str:
    config = classifier["config"]
    if not config.get("object_steps"):
        return ""
    return (
        f"; then an object-crop CNN (width {config['object_width']}, 24 x 24 crops at the"
        f" position, {config['object_steps']} steps, batch {config['object_batch_size']}) gives"
        " the object class"
    )


def model_card(training: dict, accuracy: dict, check: dict | None = None) -> str:
    """The card's markdown."""
    denoiser, classifier = training["denoiser"], training["classifier"]
    config, model = denoiser["config"], denoiser["config"]["model"]
    losses = denoiser["losses"]
    lines = [
        "# learned-lab: model card",
        "",
        "A small text-to-image diffusion model the couplednoise project trained itself, with",
        "ground-truth classifiers; loaded by `load_learned_lab()` / the built-in model",
        "`learned-lab`. Documentation: docs/learned_lab.md.",
        "",
        "## Data",
        "32 x 32 RGB composites drawn on the fly from a seed (pipelines/learned_lab/world.py): a",
        "Fashion-MNIST object (t-shirt, trouser, dress, sandal, sneaker, bag, boot; Debian",
        "`dataset-fashion-mnist`, MIT), coloured (red, yellow, green, blue, purple, white), at one of",
        "4 positions (left, right, top, bottom; 18-22 px, +-1 px jitter) on a background: a crop of",
        "scikit-image's brick / grass / gravel textures (CC0, tinted) or plain black / gray / sky.",
        "Training split: Fashion-MNIST's training images and the top 3/4 of each texture; held-out",
        "split: Fashion-MNIST's test images and the bottom 1/4.",
        "",
        "## Denoiser",
        f"diffusers UNet2DConditionModel, pixel space, channels {model['channels']}, cross-attention"
        f" at levels {model['attention']}, {model['layers_per_block']} layer(s) per block; a prompt"
        f" encoder of one {model['token_dim']}-d token per attribute (a null token when the prompt"
        " leaves it open), read by cross-attention and by the projection class embedding. Stored"
        " in float16 (loaded in float32).",
        "",
        f"Training: {denoiser['step']} of {config['steps']} planned steps, batch"
        f" {config['batch_size']}, AdamW lr {config['lr']} (warm-up {config['warmup']}, cosine),"
        f" v-prediction on DDPM's linear schedule (1e-4 .. 0.02, 1,000 steps), min-SNR-"
        f"{config['min_snr_gamma']} weights, classifier-free-guidance dropout (each attribute"
        f" {config['drop_attribute']}, all {config['drop_all']}), EMA {config['ema_decay']}, seed"
        f" {config['seed']}. Weighted loss: {_loss_at(losses, 0.0)} -> {_loss_at(losses, 0.5)} ->"
        f" {_loss_at(losses, 1.0)}.",
        "",
        "## Classifiers (ground truth)",
        f"One CNN (width {classifier['config']['width']}) with a head per attribute, trained"
        f" {min(classifier['step'], classifier['config']['steps'])} steps (batch"
        f" {classifier['config']['batch_size']}) on training-split composites with mild noise /"
        " blur augmentation"
        + _crop_stage(classifier)
        + f". Held-out accuracy on {accuracy.get('n', '?')} fresh held-out composites: "
        + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items() if k != "n")
        + ".",
    ]
    if check:
        memo = check["memorisation"]
        lines += [
            "",
            "## Quality bar",
            f"{check['prompts']} random prompts x {check['images'] // check['prompts']} images,"
            f" guidance {check['guidance']}, {check['steps']} DDIM steps; mean over prompts [95%"
            " CI]:",
            f"- every named attribute shown: {_ci(check['aligned_all_named'])}",
        ]
        lines += [
            f"- {name} shown when named: {_ci(entry)}"
            for name, entry in check["per_attribute"].items()
        ]
        lines += [
            f"- memorisation: nearest-neighbour pixel L2 to {memo['bank']:,} training composites:"
            f" samples {_ci(memo['sample_nn_distance'])}, held-out composites"
            f" {_ci(memo['heldout_nn_distance'])}; samples closer than the held-out 1st"
            f" percentile ({memo['heldout_p01']:.2f}): {memo['samples_below_heldout_p01']:.4f}",
        ]
    lines += [
        "",
        "## Retrain",
        "```bash",
        "apt-get install dataset-fashion-mnist; pip install scikit-image",
        f"couplednoise learned-lab train --out runs/denoiser --steps {config['steps']} --seed"
        f" {config['seed']} --threads 1   # resumable: rerun after a kill",
        f"couplednoise learned-lab classifiers --out runs/classifier --steps"
        f" {classifier['config']['steps']} --width {classifier['config']['width']}"
        f" --object-steps {classifier['config'].get('object_steps', 0)} --threads 1",
        "couplednoise learned-lab export --run runs/denoiser --classifiers runs/classifier",
        "couplednoise learned-lab check --json runs/check.json",
        "```",
        "Same seed and thread count -> the same weights (batches are drawn from (seed, step)).",
    ]
    if denoiser["step"] < config["steps"]:
        lines.append(
            f"These weights are the EMA at step {denoiser['step']}: the run was stopped there (its"
            " checkpoint is the state at that step); the same command continues it."
        )
    lines.append("")
    return "\n".join(lines)
