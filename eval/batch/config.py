"""Batch experiment configs (TOML or YAML): schema, CLI overrides, validation before any work.

A config names models, a prompt source, coupling specs, gallery settings, metrics and an output
folder (see configs/*.toml). ``load_config(path, overrides)`` reads it, applies ``--set
section.key=value`` overrides, checks every key and type, builds every coupling, loads and
samples the prompts and checks the models, so a bad config fails in a second with a message
naming the entry, before any model or backbone is loaded.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from couplednoise.eval.batch.prompts import load_prompts, sample_prompts

WEIGHT_FREE_METRICS = ("l2", "ms_ssim", "vendi_pixel")
MAX_ITEMS = 1_000_000  # galleries per run: the item list and the report stay in memory
MAX_PROMPTS = 1_000_000
MAX_SEEDS_PER_PROMPT = 10_000
LAB_METRIC = "lab"  # ground-truth readout of the lab model: alignment and coverage
LAB_VALUES = ("lab_alignment", "lab_scene_cov", "lab_attr_cov", "lab_scenes")

_INT, _FLOAT, _STR, _BOOL = "integer", "number", "string", "boolean"
_OPT = "optional"  # a key that may be absent (None)

# section -> key -> (type, default); a default of _OPT means None when absent.
_GENERATION_KEYS = {
    "steps": (_INT, _OPT),
    "guidance": (_FLOAT, _OPT),
    "height": (_INT, _OPT),
    "width": (_INT, _OPT),
    "dtype": (_STR, "float32"),
    "negative_prompt": (_STR, _OPT),
}
SCHEMA: dict[str, dict[str, tuple[str, Any]]] = {
    "prompts": {
        "source": (_STR, "builtin"),
        "format": (_STR, "auto"),
        "column": (_STR, _OPT),
        "n": (_INT, _OPT),
        "seed": (_INT, 0),
    },
    "generation": {
        "num_images": (_INT, 4),
        "seeds_per_prompt": (_INT, 1),
        "seed": (_INT, 0),
        **_GENERATION_KEYS,
    },
    "metrics": {
        "names": ("list", list(WEIGHT_FREE_METRICS)),
        "clip_model": (_STR, "ViT-L-14-quickgelu"),
        "clip_pretrained": (_STR, "openai"),
        "dino": (_STR, "facebook/dinov2-base"),
        "pickscore": (_STR, "yuvalkirstain/PickScore_v1"),
        "lpips_trunks": ("table", {}),
        "random_weights": (_BOOL, False),
        "dtype": (_STR, "float32"),
        "batch_size": (_INT, 16),
        "vendi_q": (_FLOAT, 1.0),
    },
    "output": {"dir": (_STR, None), "save_images": (_BOOL, False), "grids": (_INT, 4)},
    "run": {"overlap": (_BOOL, _OPT), "report": (_BOOL, True)},
}
TOP_LEVEL = {
    "models": ("list", None),
    "couplings": ("list", None),
    "methods": ("list", ["plain"]),
    "reference": (_STR, _OPT),
}
MODEL_KEYS = {"path": (_STR, None), "name": (_STR, _OPT), **_GENERATION_KEYS}


@dataclass(frozen=True)
class ModelSpec:
    """One model and the generation settings it runs with (None = the pipeline's default)."""

    name: str
    path: str
    steps: int | None
    guidance: float | None
    height: int | None
    width: int | None
    dtype: str
    negative_prompt: str | None

    @property
    def is_lab(self) -> bool:
        from couplednoise.pipelines.loading import (
            is_lab,
        )  # lazy: keeps config checks free of torch imports

        return is_lab(self.path)


@dataclass(frozen=True)
class MetricSpec:
    """Metric names and the backbones they are computed with."""

    names: tuple[str, ...]
    clip_model: str
    clip_pretrained: str
    dino: str
    pickscore: str
    lpips_trunks: dict[str, str]
    random_weights: bool
    dtype: str
    batch_size: int
    vendi_q: float


@dataclass(frozen=True)
class BatchConfig:
    """A validated experiment: every (model, prompt, seed, coupling) is one gallery = one row."""

    models: tuple[ModelSpec, ...]
    couplings: tuple[str, ...]  # canonical specs (Coupling.spec)
    methods: tuple[str, ...]  # gallery method specs (plain, cno:..., cads:...), every setting
    reference: str | None  # coupling the paired differences are taken against
    prompt_source: dict[str, Any]  # source, format, column, n, seed (for tracing)
    prompts: tuple[tuple[int, str], ...]  # (index in the source, prompt)
    num_images: int
    seeds_per_prompt: int
    seed: int
    metrics: MetricSpec
    output: Path
    save_images: bool
    grids: int
    overlap: bool | None  # None: overlap generation and scoring on CUDA only
    report: bool

    def seeds_for(self, prompt_index: int) -> list[int]:
        """The generator seeds of a prompt's galleries: shared by all couplings (paired data)."""
        first = self.seed + prompt_index * self.seeds_per_prompt
        return list(range(first, first + self.seeds_per_prompt))

    def fingerprint_sections(self) -> dict[str, Any]:
        """Everything that determines the rows, by section; a resumed run must match it."""
        return {
            "models": [asdict(m) for m in self.models],
            "prompts": [list(p) for p in self.prompts],
            "couplings": list(self.couplings),
            # only when a run uses more than plain sampling: older runs keep their fingerprint
            **({"methods": list(self.methods)} if self.methods != ("plain",) else {}),
            "generation": {
                "num_images": self.num_images,
                "seeds_per_prompt": self.seeds_per_prompt,
                "seed": self.seed,
            },
            "metrics": {k: v for k, v in asdict(self.metrics).items() if k != "batch_size"},
        }

    def fingerprint(self) -> str:
        """sha256 of ``fingerprint_sections`` as canonical JSON."""
        text = json.dumps(self.fingerprint_sections(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The resolved config as JSON-able data (written to the run's config.json)."""
        data = asdict(self)
        data["output"] = str(self.output)
        data["prompts"] = [list(p) for p in self.prompts]
        return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a .toml / .yaml / .yml file (ValueError if unreadable)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"config {path} is not UTF-8 text ({error.reason})") from None
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ValueError(f"config {path} must be .toml, .yaml or .yml")
    except ValueError:
        raise
    except Exception as error:  # tomllib.TOMLDecodeError / yaml.YAMLError
        raise ValueError(f"cannot parse {path}: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """ "generation.steps=30" -> (["generation", "steps"], 30); the value is read as TOML
    (numbers, booleans, "strings", [lists]); anything else is taken as a plain string."""
    import tomllib

    key, eq, value = text.partition("=")
    if not eq or not re.fullmatch(r"[A-Za-z_]+(\.[A-Za-z_]+)*", key.strip()):
        raise ValueError(f"override {text!r} must look like section.key=value")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip().split("."), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``data`` with each "section.key=value" set (later ones win)."""
    data = json.loads(json.dumps(data, default=str))
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {text!r}: {key!r} is not a section")
        node[keys[-1]] = value
    return data


def _unknown_key(where: str, key: str, valid) -> ValueError:
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"unknown key {where}{key!r}{hint}; valid: {', '.join(valid)}")


def _check_type(where: str, value: Any, kind: str) -> Any:
    ok = {
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _FLOAT: isinstance(value, (int, float)) and not isinstance(value, bool),
        _STR: isinstance(value, str),
        _BOOL: isinstance(value, bool),
        "list": isinstance(value, list),
        "table": isinstance(value, dict),
    }[kind]
    if not ok:
        article = "an" if kind[0] in "aeiou" else "a"
        raise TypeError(f"{where} must be {article} {kind}, got {value!r} ({type(value).__name__})")
    if kind == _FLOAT:
        if not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    return value


def _section(data: Any, name: str, schema: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """``data`` checked against ``schema`` with defaults filled in."""
    where = f"{name}." if name else ""
    if not isinstance(data, dict):
        raise TypeError(f"[{name}] must be a table of keys, got {type(data).__name__}")
    for key in data:
        if key not in schema:
            raise _unknown_key(where, key, schema)
    resolved = {}
    for key, (kind, default) in schema.items():
        value = data.get(key)
        if value is None:
            if default is None:
                raise ValueError(f"{where}{key} is required")
            resolved[key] = None if default is _OPT else default
        else:
            resolved[key] = _check_type(f"{where}{key}", value, kind)
    return resolved


def _check_range(where: str, value: float | None, low: float, high: float | None = None) -> None:
    if value is not None and value < low:
        raise ValueError(f"{where} must be >= {low}, got {value}")
    if value is not None and high is not None and value > high:
        raise ValueError(f"{where} must be <= {high}, got {value}")


def _check_dtype(where: str, value: str) -> None:
    from couplednoise.eval.cli.options import DTYPE_NAMES

    if value not in DTYPE_NAMES:
        raise ValueError(f"{where} must be one of {', '.join(DTYPE_NAMES)}, got {value!r}")


def _models(entries: list, defaults: dict[str, Any]) -> tuple[ModelSpec, ...]:
    if not entries:
        raise ValueError("models must name at least one model (a local folder, a hub id or 'lab')")
    models = []
    for i, entry in enumerate(entries):
        entry = {"path": entry} if isinstance(entry, str) else entry
        fields = _section(entry, f"models[{i}]", MODEL_KEYS)
        settings = {k: defaults[k] if fields[k] is None else fields[k] for k in _GENERATION_KEYS}
        model = ModelSpec(name=fields["name"] or fields["path"], path=fields["path"], **settings)
        _check_generation_ranges(f"models[{i}]", settings)
        _check_dtype(f"models[{i}].dtype", model.dtype)
        _check_model_path(model)
        models.append(model)
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"model names must be unique; repeated: {duplicates} (set models[].name)")
    return tuple(models)


def _check_generation_ranges(where: str, settings: dict[str, Any]) -> None:
    """steps in [1, 1000], height / width in [1, 8192] (guidance is finite by type)."""
    from couplednoise.eval.cli.options import MAX_SIDE, MAX_STEPS

    _check_range(f"{where}.steps", settings.get("steps"), 1, MAX_STEPS)
    for key in ("height", "width"):
        _check_range(f"{where}.{key}", settings.get(key), 1, MAX_SIDE)


def _check_model_path(model: ModelSpec) -> None:
    """A built-in spec parses (lab:size=48 does not); a local folder is a diffusers folder; a hub
    id is in the cache when downloads are off (HF_HUB_OFFLINE=1). Config files only, no weights."""
    from couplednoise.pipelines.loading import check_model

    try:
        check_model(model.path)
    except ValueError as error:
        raise ValueError(f"models: {model.name!r}: {error}") from error


def _check_couplings_fit(models: tuple[ModelSpec, ...], couplings, num_images: int) -> None:
    """Every coupling at the real gallery size and each model's latent shape (no weights):
    a rho too negative for the gallery, orthogonal with more images than dimensions, ..."""
    from couplednoise import get_coupling
    from couplednoise.pipelines.loading import planned_latent_shape

    for model in models:
        shape = planned_latent_shape(model.path, model.height, model.width)
        for spec in couplings:
            try:
                coupling = get_coupling(spec)
                if shape is not None:  # else checked once the model is loaded
                    coupling.check(num_images, shape)
            except ValueError as error:
                raise ValueError(
                    f"coupling {spec!r} cannot draw galleries of {num_images} for model "
                    f"{model.name!r}: {error}"
                ) from error


def _methods(entries: list) -> tuple[str, ...]:
    """Gallery method specs with every setting (plain, cno, cads: couplednoise.pipelines.baselines)."""
    from couplednoise.pipelines.baselines.settings import get_gallery_method

    if not entries:
        raise ValueError("methods must list at least one gallery method, e.g. 'plain'")
    specs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise TypeError(f"methods[{i}] must be a spec string, got {entry!r}")
        try:
            specs.append(get_gallery_method(entry).spec)
        except ValueError as error:
            raise ValueError(f"methods[{i}] = {entry!r}: {error}") from error
    if len(set(specs)) != len(specs):
        raise ValueError(f"methods repeat a method: {specs}")
    return tuple(specs)


def _couplings(entries: list) -> tuple[str, ...]:
    from couplednoise import get_coupling

    if not entries:
        raise ValueError("couplings must list at least one coupling spec, e.g. 'independent'")
    specs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise TypeError(f"couplings[{i}] must be a spec string, got {entry!r}")
        try:
            specs.append(get_coupling(entry).spec)
        except (ValueError, TypeError) as error:
            raise ValueError(f"couplings[{i}] = {entry!r}: {error}") from error
    if len(set(specs)) != len(specs):
        raise ValueError(f"couplings repeat a coupling: {specs}")
    return tuple(specs)


def _metric_spec(section: dict[str, Any], models: tuple[ModelSpec, ...]) -> MetricSpec:
    from couplednoise.eval.metrics.registry import METRICS

    names = section["names"]
    if not names:
        raise ValueError("metrics.names must list at least one metric")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"metrics.names[{i}] must be a string, got {name!r}")
        if name not in METRICS and name != LAB_METRIC:
            raise ValueError(
                f"unknown metric {name!r} in metrics.names; known: {', '.join(METRICS)}, "
                f"{LAB_METRIC} (ground-truth readout, lab model only)"
            )
    if LAB_METRIC in names and not all(m.is_lab for m in models):
        raise ValueError(f"metric {LAB_METRIC!r} (ground-truth readout) needs lab models only")
    _check_dtype("metrics.dtype", section["dtype"])
    _check_range("metrics.batch_size", section["batch_size"], 1, 4096)
    _check_range("metrics.vendi_q", section["vendi_q"], 0.0)
    trunks = section["lpips_trunks"]
    for net, path in trunks.items():
        if not isinstance(path, str) or not Path(path).expanduser().is_file():
            raise ValueError(f"metrics.lpips_trunks.{net}: weights file not found: {path!r}")
    trunks = {net: str(Path(path).expanduser()) for net, path in trunks.items()}
    spec = MetricSpec(**{**section, "names": tuple(names), "lpips_trunks": trunks})
    _check_backbone_weights(spec)
    return spec


def _check_backbone_weights(spec: MetricSpec) -> None:
    """The metric backbones' weights exist (or may still download): before any folder or model."""
    from couplednoise.eval.backbones.loading import check_weights_available, plan_backbones_for

    names = [n for n in spec.names if n != LAB_METRIC]
    plan = plan_backbones_for(names, spec, spec.lpips_trunks)
    try:
        check_weights_available(plan, random_weights=spec.random_weights)
    except OSError as error:  # MissingWeightsError: say which config entry needs them
        raise ValueError(f"metrics.names: {error}") from error


def _check_lab_prompts(models: tuple[ModelSpec, ...], prompts) -> None:
    if any(m.is_lab for m in models):
        from couplednoise.pipelines.lab import parse_prompt

        for index, prompt in prompts:
            try:
                parse_prompt(prompt)
            except ValueError as error:
                raise ValueError(f"prompt {index} cannot run on the lab model: {error}") from error


def validate_config(data: dict[str, Any]) -> BatchConfig:
    """A ``BatchConfig`` from a raw mapping; ValueError / TypeError naming the bad entry."""
    known = {**TOP_LEVEL, **{name: ("table", {}) for name in SCHEMA}}
    top = _section(data, "", known)
    sections = {name: _section(top[name], name, schema) for name, schema in SCHEMA.items()}
    gen, prompts_section, out = sections["generation"], sections["prompts"], sections["output"]
    from couplednoise.eval.cli.options import MAX_IMAGES, MAX_SEED

    _check_range("generation.num_images", gen["num_images"], 2, MAX_IMAGES)
    _check_range("generation.seeds_per_prompt", gen["seeds_per_prompt"], 1, MAX_SEEDS_PER_PROMPT)
    _check_range("generation.seed", gen["seed"], 0, MAX_SEED)
    _check_generation_ranges("generation", gen)
    _check_range("output.grids", out["grids"], 0, 100_000)
    _check_range("prompts.n", prompts_section["n"], 1, MAX_PROMPTS)
    _check_range("prompts.seed", prompts_section["seed"], 0, MAX_SEED)
    _check_dtype("generation.dtype", gen["dtype"])
    models = _models(top["models"], gen)
    couplings = _couplings(top["couplings"])
    methods = _methods(top["methods"])
    _check_couplings_fit(models, couplings, gen["num_images"])
    reference = top["reference"]
    if reference is None:
        reference = "independent" if "independent" in couplings else None
    else:
        from couplednoise import get_coupling

        reference = get_coupling(reference).spec
        if reference not in couplings:
            raise ValueError(f"reference {reference!r} is not one of the couplings {couplings}")
    metrics = _metric_spec(sections["metrics"], models)
    source = {k: prompts_section[k] for k in ("source", "format", "column", "n", "seed")}
    all_prompts = load_prompts(
        prompts_section["source"],
        format=prompts_section["format"],
        column=prompts_section["column"],
    )
    prompts = tuple(sample_prompts(all_prompts, prompts_section["n"], prompts_section["seed"]))
    _check_lab_prompts(models, prompts)
    items = len(models) * len(prompts) * gen["seeds_per_prompt"] * len(couplings) * len(methods)
    if items > MAX_ITEMS:
        raise ValueError(
            f"the config asks for {items:,} galleries (models x prompts x seeds_per_prompt x "
            f"couplings x methods); at most {MAX_ITEMS:,} per run: split it into several runs"
        )
    if gen["seed"] + len(all_prompts) * gen["seeds_per_prompt"] > MAX_SEED:
        raise ValueError("generation.seed is too large: gallery seeds would pass 2**63 - 1")
    return BatchConfig(
        models=models,
        couplings=couplings,
        methods=methods,
        reference=reference,
        prompt_source=source,
        prompts=prompts,
        num_images=gen["num_images"],
        seeds_per_prompt=gen["seeds_per_prompt"],
        seed=gen["seed"],
        metrics=metrics,
        output=Path(out["dir"]).expanduser(),
        save_images=out["save_images"],
        grids=out["grids"],
        overlap=sections["run"]["overlap"],
        report=sections["run"]["report"],
    )


def load_config(path: str | Path, overrides: list[str] | None = None) -> BatchConfig:
    """Read, override ("section.key=value") and validate a config file."""
    return validate_config(apply_overrides(read_config_file(path), overrides or []))
