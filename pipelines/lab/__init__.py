"""The closed-form lab: a procedural scene world, an exact denoiser and ground-truth readout.

pipe = load_lab_pipeline("lab")                  # 32 x 32, DDIM; "lab:size=64,scheduler=flow"
images = pipe("a red circle", num_images_per_prompt=4, output_type="pt").images
readout = gallery_readout(images, "a red circle", pipe.world)
"""

from couplednoise.pipelines.lab.load import load_lab_pipeline, parse_lab_spec
from couplednoise.pipelines.lab.pipeline import SCHEDULERS, LabPipeline, LabPipelineOutput
from couplednoise.pipelines.lab.prompts import parse_prompt
from couplednoise.pipelines.lab.world import ATTRIBUTES, World, build_world

__all__ = [
    "ATTRIBUTES",
    "SCHEDULERS",
    "LabPipeline",
    "LabPipelineOutput",
    "World",
    "build_world",
    "load_lab_pipeline",
    "parse_lab_spec",
    "parse_prompt",
]
