"""couplednoise: coupled initial noise for diffusion galleries.

Every coupling draws a batch [n, *shape] whose rows are each exactly N(0, I) while the rows
depend on each other by design. Torch only: importing this never imports diffusers.
"""

from couplednoise.base import Coupling
from couplednoise.extension import conditional_sample
from couplednoise.gaussian import Antithetic, Equicorrelated, Gaussian, Independent, Repulsive
from couplednoise.grouped import Grouped, sample_groups
from couplednoise.orthogonal import Orthogonal
from couplednoise.pipeline_latents import (
    check_latents,
    count_prompts,
    default_size,
    generate,
    latent_grid,
    latent_shape,
    latents_for,
    size_multiple,
)
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
from couplednoise.spec import COUPLINGS, get_coupling, parse_spec
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
    "check_binary_mask",
    "check_latents",
    "conditional_sample",
    "count_prompts",
    "default_size",
    "generate",
    "get_coupling",
    "get_predictor",
    "latent_grid",
    "latent_shape",
    "latents_for",
    "parse_spec",
    "sample_groups",
    "size_multiple",
]
