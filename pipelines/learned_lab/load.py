"""Load the learned lab from its committed weights; export them from training runs.

    pipe = load_learned_lab("learned-lab")                 # DDIM; "learned-lab:scheduler=euler"
    classifier = load_classifier()                         # the ground-truth readout
    export_weights("runs/denoiser", "runs/classifier")     # -> pipelines/learned_lab/weights/

The weights folder holds ``unet/`` and ``prompt_encoder/`` (diffusers ``save_pretrained``
folders, safetensors; the UNet stored in float16 and loaded in float32 unless asked otherwise),
``classifier.safetensors`` + ``classifier.json`` (its width and held-out accuracy) and
``training.json`` (the training configs and loss curves).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SPEC_DEFAULTS = {"scheduler": "ddim", "weights": ""}
_REQUIRED = (
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "prompt_encoder/config.json",
    "prompt_encoder/diffusion_pytorch_model.safetensors",
    "classifier.safetensors",
    "classifier.json",
    "training.json",
)


def parse_learned_lab_spec(spec: str) -> dict[str, str]:
    """ "learned-lab:scheduler=euler,weights=DIR" -> options (``SPEC_DEFAULTS`` filled in)."""
    from couplednoise.pipelines.learned_lab.pipeline import SCHEDULERS

    name, _, rest = spec.strip().partition(":")
    if name.strip().lower() != "learned-lab":
        raise ValueError(f"a learned-lab spec starts with 'learned-lab', got {spec!r}")
    options = dict(SPEC_DEFAULTS)
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in SPEC_DEFAULTS:
            raise ValueError(
                f"learned-lab option {item!r} in {spec!r} is not key=value with key one of "
                f"{', '.join(SPEC_DEFAULTS)}"
            )
        options[key.strip()] = value.strip()
    if options["scheduler"] not in SCHEDULERS:
        raise ValueError(
            f"unknown learned-lab scheduler {options['scheduler']!r}; "
            f"valid: {', '.join(SCHEDULERS)}"
        )
    return options


def weights_dir(weights: str | Path | None = None) -> Path:
    """The weights folder (default: the committed one), checked to hold every file."""
    folder = Path(weights) if weights else WEIGHTS_DIR
    missing = [name for name in _REQUIRED if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"learned-lab weights folder {folder} lacks {', '.join(missing)}; the committed "
            "weights live in couplednoise/pipelines/learned_lab/weights, or rebuild them with "
            "`couplednoise learned-lab train`, `... classifiers` and `... export`"
        )
    return folder


DENOISER_FILES = _REQUIRED[:4]


def weights_fingerprint(spec: str = "learned-lab", files: tuple[str, ...] = _REQUIRED) -> str:
    """A SHA-256 digest (16 hex digits) of ``files`` of the weights ``spec`` loads: studies key
    their caches on it, so results of other weights (a retrained classifier) are never reused."""
    import hashlib

    folder = weights_dir(parse_learned_lab_spec(spec)["weights"] or None)
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()[:16]


def load_learned_lab(
    spec: str = "learned-lab",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
):
    """The learned-lab pipeline described by ``spec``, on ``device`` in ``dtype`` (float32)."""
    from diffusers import UNet2DConditionModel

    from couplednoise.pipelines.learned_lab.model import PromptEncoder
    from couplednoise.pipelines.learned_lab.pipeline import SCHEDULERS, LearnedLabPipeline

    options = parse_learned_lab_spec(spec)
    folder = weights_dir(options["weights"] or None)
    dtype = dtype or torch.float32
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype).eval()
    encoder = PromptEncoder.from_pretrained(folder / "prompt_encoder").eval()
    pipe = LearnedLabPipeline(unet, encoder, SCHEDULERS[options["scheduler"]]())
    pipe.register_to_config(_name_or_path=spec)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if device is not None else pipe


def load_classifier(weights: str | Path | None = None):
    """The ground-truth attribute classifier (evaluation mode, float32, CPU)."""
    from safetensors.torch import load_file

    from couplednoise.pipelines.learned_lab.classifier import AttributeClassifier

    folder = weights_dir(weights)
    meta = json.loads((folder / "classifier.json").read_text())
    classifier = AttributeClassifier(meta["width"], meta.get("object_width"))
    classifier.load_state_dict(load_file(folder / "classifier.safetensors"))
    return classifier.eval()


def classifier_accuracy(weights: str | Path | None = None) -> dict:
    """The held-out accuracy recorded when the classifier was exported."""
    return json.loads((weights_dir(weights) / "classifier.json").read_text())["accuracy"]


def training_record(weights: str | Path | None = None) -> dict:
    """training.json of the weights: the configs, steps and loss curves they were trained with."""
    return json.loads((weights_dir(weights) / "training.json").read_text())


def export_weights(
    run_dir: str | Path | None,
    classifier_dir: str | Path,
    target: str | Path | None = None,
    *,
    check: dict | None = None,
) -> Path:
    """Write the EMA denoiser (UNet in float16), the classifier and MODEL_CARD.md (with the
    quality check's figures if ``check`` is given) from the run folders. With ``run_dir`` None
    only the classifier is replaced: the denoiser in ``target`` and its training record stay."""
    from safetensors.torch import save_file

    from couplednoise.pipelines.learned_lab.card import model_card
    from couplednoise.pipelines.learned_lab.classifier import CHECKPOINT, load_classifier_state
    from couplednoise.pipelines.learned_lab.train import CHECKPOINT as DENOISER
    from couplednoise.pipelines.learned_lab.train import load_state

    target = Path(target) if target else WEIGHTS_DIR
    classifier_dir = Path(classifier_dir)
    needed = [classifier_dir / CHECKPOINT]
    if run_dir is not None:
        needed.append(Path(run_dir) / DENOISER)
    for path in needed:
        if not path.is_file():
            raise FileNotFoundError(f"no training checkpoint at {path}")
    if run_dir is None:
        weights_dir(target)  # the denoiser that stays must be complete
        denoiser = training_record(target)["denoiser"]
    classifier = load_classifier_state(classifier_dir / CHECKPOINT)
    if run_dir is not None:
        state = load_state(Path(run_dir) / DENOISER)
        state.ema.unet.to(torch.float16).save_pretrained(target / "unet", safe_serialization=True)
        state.ema.prompt_encoder.save_pretrained(target / "prompt_encoder", safe_serialization=True)
        denoiser = {"config": state.config.to_dict(), "step": state.step, "losses": state.losses}
    tensors = {k: v.contiguous() for k, v in classifier.model.state_dict().items()}
    save_file(tensors, target / "classifier.safetensors")
    object_width = classifier.config.object_width if classifier.config.object_steps else None
    meta = {
        "width": classifier.config.width,
        "object_width": object_width,
        "accuracy": classifier.accuracy,
    }
    (target / "classifier.json").write_text(json.dumps(meta, indent=1) + "\n")
    training = {
        "denoiser": denoiser,
        "classifier": {"config": asdict(classifier.config), "step": classifier.step},
    }
    (target / "training.json").write_text(json.dumps(training, indent=1) + "\n")
    (target / "MODEL_CARD.md").write_text(model_card(training, classifier.accuracy, check))
    return target
