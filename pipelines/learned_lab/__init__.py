"""The learned lab: a small diffusion model the project trains on real images, with ground truth.

pipe = load_learned_lab()                                     # committed weights, DDIM
images = pipe("a red sneaker on brick", num_images_per_prompt=4, output_type="pt").images
readout = gallery_readout(images, "a red sneaker on brick", load_classifier())

Data: Fashion-MNIST objects (Debian dataset-fashion-mnist), coloured and placed on scikit-image
textures or plain backgrounds, 32 x 32 RGB, drawn on the fly from a seed (``world``). Model: a
diffusers UNet2DConditionModel with a learned attribute-token prompt encoder (``model``), trained
by ``couplednoise learned-lab train`` (``train``). See docs/learned_lab.md.
"""

from couplednoise.pipelines.learned_lab.load import (
    WEIGHTS_DIR,
    export_weights,
    load_classifier,
    load_learned_lab,
    parse_learned_lab_spec,
)
from couplednoise.pipelines.learned_lab.pipeline import (
    SCHEDULERS,
    LearnedLabPipeline,
    LearnedLabPipelineOutput,
)
from couplednoise.pipelines.learned_lab.prompts import parse_prompt, prompt_codes
from couplednoise.pipelines.learned_lab.readout import fixed_object_readout, gallery_readout
from couplednoise.pipelines.learned_lab.world import ATTRIBUTES, sample_composites

__all__ = [
    "ATTRIBUTES",
    "SCHEDULERS",
    "WEIGHTS_DIR",
    "LearnedLabPipeline",
    "LearnedLabPipelineOutput",
    "export_weights",
    "fixed_object_readout",
    "gallery_readout",
    "load_classifier",
    "load_learned_lab",
    "parse_learned_lab_spec",
    "parse_prompt",
    "prompt_codes",
    "sample_composites",
]
