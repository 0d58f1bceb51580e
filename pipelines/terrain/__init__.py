"""The terrain model: a trained consistency UNet (PyPI adaptive-terrain-diffusion, MIT) that makes
difficulty-conditioned 128 x 128 heightfields; needs ``pip install "couplednoise[terrain]"``.

pipe = load_terrain_pipeline("terrain")                 # "terrain:threads=2,floor=40"
images = pipe("difficulty 50", num_images_per_prompt=4, output_type="pt").images
images = pipe("50", num_images_per_prompt=4, num_inference_steps=2, output_type="pt").images
"""

from couplednoise.pipelines.terrain.denoiser import MissingPackageError, TerrainDenoiser
from couplednoise.pipelines.terrain.load import (
    check_terrain_spec,
    load_terrain_pipeline,
    parse_terrain_spec,
)
from couplednoise.pipelines.terrain.pipeline import (
    TerrainPipeline,
    TerrainPipelineOutput,
    to_images,
)
from couplednoise.pipelines.terrain.prompts import difficulty_input, parse_difficulty
from couplednoise.pipelines.terrain.schedule import ConsistencySchedule

__all__ = [
    "ConsistencySchedule",
    "MissingPackageError",
    "TerrainDenoiser",
    "TerrainPipeline",
    "TerrainPipelineOutput",
    "check_terrain_spec",
    "difficulty_input",
    "load_terrain_pipeline",
    "parse_difficulty",
    "parse_terrain_spec",
    "to_images",
]
