"""couplednoise: coupled initial noise for diffusion galleries.

Every coupling draws a batch [n, *shape] whose rows are each exactly N(0, I) while the rows
depend on each other by design. Torch only: importing this never imports diffusers.
"""

from couplednoise.base import Coupling, check_count, standard_normal
from couplednoise.cells import cell_predictor_from_outcomes, cell_predictor_from_pilots
from couplednoise.extension import conditional_sample
from couplednoise.gaussian import Antithetic, Equicorrelated, Gaussian, Independent, Repulsive
from couplednoise.grouped import Grouped, sample_groups
from couplednoise.orthogonal import Orthogonal
from couplednoise.pipeline_call import check_request, count_prompts, generate
from couplednoise.pipeline_latents import check_latents, latent_grid, latent_shape, latents_for
from couplednoise.pipeline_shapes import UnsupportedPipelineError, default_size, size_multiple
from couplednoise.pool import Pool
from couplednoise.predictors import (
    PREDICTORS,
    CellPredictor,
    DCTPredictor,
    FunctionPredictor,
    Predictor,
    get_predictor,
)
from couplednoise.projectors import check_binary_mask
from couplednoise.samplers import initial_noise
from couplednoise.seam import coupled
from couplednoise.spec import COUPLINGS, describe_couplings, get_coupling, parse_spec, split_spec
from couplednoise.subspace import Subspace

__version__ = "0.1.0"

__all__ = [
    "COUPLINGS",
    "PREDICTORS",
    "Antithetic",
    "CellPredictor",
    "Coupling",
    "DCTPredictor",
    "Equicorrelated",
    "FunctionPredictor",
    "Gaussian",
    "Grouped",
    "Independent",
    "Orthogonal",
    "Pool",
    "Predictor",
    "Repulsive",
    "Subspace",
    "UnsupportedPipelineError",
    "cell_predictor_from_outcomes",
    "cell_predictor_from_pilots",
    "check_binary_mask",
    "check_count",
    "check_latents",
    "check_request",
    "conditional_sample",
    "count_prompts",
    "coupled",
    "default_size",
    "describe_couplings",
    "generate",
    "get_coupling",
    "get_predictor",
    "initial_noise",
    "latent_grid",
    "latent_shape",
    "latents_for",
    "parse_spec",
    "sample_groups",
    "size_multiple",
    "split_spec",
    "standard_normal",
]
