"""Baselines beside coupled noise, and coupled noise as their initialisation.

- CNO, contrastive noise optimisation of the initial latents (``cno_latents``);
- CADS, condition-annealed sampling through step callbacks (``sample_with_cads``);
- ``sample_gallery`` runs any of them (or plain sampling) from given latents, and
  ``count_evaluations`` counts the denoiser's forward and backward passes meanwhile.

    latents = couplednoise.latents_for(pipe, "repulsive", num_images_per_prompt=4, generator=g)
    output = sample_gallery(pipe, "a red car", latents, "cno:iterations=3", num_images_per_prompt=4)
    config["gallery_method"] = get_gallery_method("cno:iterations=3").record()
"""

from couplednoise.pipelines.baselines.cads import (
    CADSCallback,
    cads_gamma,
    noise_condition,
    noise_prompt_weights,
    sample_with_cads,
)
from couplednoise.pipelines.baselines.cno import CNOResult, cno_latents, cno_loss
from couplednoise.pipelines.baselines.counting import EvaluationCount, count_evaluations
from couplednoise.pipelines.baselines.first_step import FirstStep, first_step, tweedie_x0
from couplednoise.pipelines.baselines.gallery import sample_gallery
from couplednoise.pipelines.baselines.settings import (
    GALLERY_METHODS,
    CADSSettings,
    CNOSettings,
    GalleryMethod,
    PlainSampling,
    get_gallery_method,
    method_from_record,
)

__all__ = [
    "GALLERY_METHODS",
    "CADSCallback",
    "CADSSettings",
    "CNOResult",
    "CNOSettings",
    "EvaluationCount",
    "FirstStep",
    "GalleryMethod",
    "PlainSampling",
    "cads_gamma",
    "cno_latents",
    "cno_loss",
    "count_evaluations",
    "first_step",
    "get_gallery_method",
    "method_from_record",
    "noise_condition",
    "noise_prompt_weights",
    "sample_gallery",
    "sample_with_cads",
    "tweedie_x0",
]
