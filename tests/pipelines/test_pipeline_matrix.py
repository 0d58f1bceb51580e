"""The pipeline matrix: couplednoise.generate couples the initial draw of every pipeline family.

Tiny random-weight pipelines (tests/tiny_pipelines.py), 2 prompts x K = 2, 1-2 steps. For each:
- the pipeline runs through the seam, and its own run (no coupling) has the same first denoiser
  input shape;
- the denoiser's first input carries the coupling exactly: it is a scalar multiple of the served
  noise (up to the pipeline's packing, a permutation), plus, for image-conditioned pipelines, a
  scalar multiple of the image latents; each prompt's group of the served noise sums to zero
  (repulsive) and so does the first input once the image part is removed;
- image-conditioned pipelines respect the image (another image changes the first input and the
  output; inpainting keeps the image latents outside the mask exactly);
- where latents_for can size the latents (text-to-image), latents_for + pipe(latents=...) gives
  exactly the first input of generate (same seeds): the pipeline's own default size and size
  rules (binning, max_area); where it cannot, it refuses with an error naming the pipeline.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import couplednoise
from couplednoise import UnsupportedPipelineError, coupled, generate, latents_for
from couplednoise.seam import NoiseSeam
from tests.tiny_models import capture_denoiser_inputs, tiny_sd3
from tests.tiny_pipelines import TINY_PIPELINES, variant

PROMPTS = ["a red cube", "a blue ball"]
K = 2
B = len(PROMPTS) * K
SEEDS = (10, 11)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def generators() -> list[torch.Generator]:
    return [seeded(s) for s in SEEDS]


def picture(seed: int | None, size: int = 64) -> Image.Image:
    """A random RGB picture, or black for seed None."""
    if seed is None:
        return Image.new("RGB", (size, size), 0)
    pixels = np.random.RandomState(seed).randint(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


MASK = Image.fromarray(np.pad(np.full((32, 32), 255, np.uint8), 16))  # repaint the centre
IMAGE = picture(0)
T5 = {"max_sequence_length": 16}


@dataclass
class Case:
    id: str
    family: str
    call: dict[str, Any]
    pipeline_class: str | None = None  # a variant built from the family's components
    scheduler: str | None = None
    image_conditioned: bool = False
    inpaint: bool = False
    one_per_prompt: bool = False  # the pipeline makes one output per prompt: repeat prompts
    image_tokens: bool = False  # the image enters as tokens after the noise (FLUX Kontext)
    per_prompt: str = "num_images_per_prompt"
    latents_for: dict[str, Any] | None = field(default_factory=dict)  # None: it must refuse
    prompts: list[str] | None = field(default_factory=lambda: list(PROMPTS))


# strength 0.5 of 4 steps: 2 steps run, from the timestep halfway (251 of 1000 for SD's DDIM).
IMG2IMG = {"image": IMAGE, "strength": 0.5, "num_inference_steps": 4}
INPAINT = {**IMG2IMG, "mask_image": MASK, "height": 64, "width": 64}
KANDINSKY_EMBEDS = {
    "image_embeds": torch.randn(2, 32, generator=seeded(3)),
    "negative_image_embeds": torch.randn(2, 32, generator=seeded(4)),
}

CASES = [
    Case("sd15-ddim", "sd15", {"negative_prompt": ["blurry", "dark"]}),
    Case("sd15-euler-ancestral", "sd15", {}, scheduler="EulerAncestralDiscreteScheduler"),
    Case("sd15-dpm-multistep", "sd15", {}, scheduler="DPMSolverMultistepScheduler"),
    Case("sdxl", "sdxl", {"negative_prompt": ["dark", "flat"]}),
    Case("sd3", "sd3", {}),
    Case("flux", "flux", {"height": 64, "width": 64, **T5}),
    Case(
        "flux-img2img",
        "flux",
        {**IMG2IMG, "height": 64, "width": 64, **T5},
        pipeline_class="FluxImg2ImgPipeline",
        image_conditioned=True,
        latents_for=None,
    ),
    Case(  # default max_area 1024**2: a 64 x 64 px request is rendered at 1,024 x 1,024
        "flux-kontext",
        "flux_kontext",
        {"image": IMAGE, "_auto_resize": False, **T5},
        image_tokens=True,
    ),
    Case(  # binning: 224 x 224 px are rendered at 256 x 256 (32 x 32 latents, not 28 x 28)
        "pixart-sigma-binning",
        "pixart_sigma",
        {"height": 224, "width": 224, "clean_caption": False, **T5},
    ),
    Case(  # no size: 1,024 px (signature), binned to 512 px for sample_size 16
        "sana-binning",
        "sana",
        {"complex_human_instruction": None, **T5},
    ),
    Case(
        "sana-no-binning",
        "sana",
        {"complex_human_instruction": None, "use_resolution_binning": False, **T5},
        latents_for={"use_resolution_binning": False},
    ),
    Case("aura-flow-default-size", "aura_flow", {**T5}),
    Case(  # 800 x 600 px binned to HunyuanDiT's standard 1,024 x 768
        "hunyuan-dit-binning",
        "hunyuan_dit",
        {"height": 600, "width": 800, "num_inference_steps": 1},
    ),
    Case(
        "sd15-img2img",
        "sd15",
        IMG2IMG,
        pipeline_class="StableDiffusionImg2ImgPipeline",
        image_conditioned=True,
        latents_for=None,
    ),
    Case(
        "sd15-inpaint",
        "sd15",
        INPAINT,
        pipeline_class="StableDiffusionInpaintPipeline",
        image_conditioned=True,
        inpaint=True,
        latents_for=None,
    ),
    Case(
        "sdxl-img2img",
        "sdxl",
        IMG2IMG,
        pipeline_class="StableDiffusionXLImg2ImgPipeline",
        image_conditioned=True,
        latents_for=None,
    ),
    Case(
        "sdxl-inpaint",
        "sdxl",
        INPAINT,
        pipeline_class="StableDiffusionXLInpaintPipeline",
        image_conditioned=True,
        inpaint=True,
        latents_for=None,
    ),
    Case(
        "kandinsky22-decoder",
        "kandinsky22",
        {"height": 64, "width": 64, **KANDINSKY_EMBEDS},
        prompts=None,
    ),
    Case("ldm", "ldm", {}, one_per_prompt=True),
    Case(
        "animatediff",
        "animatediff",
        {"num_frames": 4},
        one_per_prompt=True,
        per_prompt="num_videos_per_prompt",
        latents_for=None,
    ),
    Case(
        "wan",
        "wan",
        {"height": 16, "width": 16, "num_frames": 9, **T5},
        per_prompt="num_videos_per_prompt",
        latents_for=None,
    ),
    Case(
        "ltx",
        "ltx",
        {"height": 32, "width": 32, "num_frames": 9, **T5},
        per_prompt="num_videos_per_prompt",
        latents_for=None,
    ),
    Case(
        "cogvideox",
        "cogvideox",
        {"height": 16, "width": 16, "num_frames": 8, **T5},
        one_per_prompt=True,
        per_prompt="num_videos_per_prompt",
        latents_for=None,
    ),
]
BUILDERS = {**TINY_PIPELINES, "sd3": tiny_sd3}


@pytest.fixture(scope="module")
def pipes():
    """A function case -> its pipeline; each family is built once, variants share its modules."""
    families: dict[str, Any] = {}
    built: dict[str, Any] = {}

    def get(case: Case):
        if case.id not in built:
            if case.family not in families:
                families[case.family] = BUILDERS[case.family]()
            pipe = families[case.family]
            extra = {}
            if case.scheduler is not None:
                import diffusers

                scheduler_cls = getattr(diffusers, case.scheduler)
                extra["scheduler"] = scheduler_cls.from_config(pipe.scheduler.config)
            if case.pipeline_class is not None or extra:
                pipe = variant(pipe, case.pipeline_class or type(pipe).__name__, **extra)
            built[case.id] = pipe
        return built[case.id]

    return get


@contextlib.contextmanager
def served_noise():
    """Record the noise every seam serves: yields a list of float32 [B, *shape] tensors."""
    served: list[torch.Tensor] = []
    original = NoiseSeam.serve

    def serve(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        served.append(self.noise.clone())
        return out

    NoiseSeam.serve = serve
    try:
        yield served
    finally:
        NoiseSeam.serve = original


@contextlib.contextmanager
def noised_image(pipe):
    """Record (image latents, noise) of the pipeline's first add_noise / scale_noise call."""
    scheduler = pipe.scheduler
    name = "scale_noise" if hasattr(scheduler, "scale_noise") else "add_noise"
    original = getattr(scheduler, name)
    record: dict[str, torch.Tensor] = {}

    def hook(*args, **kwargs):
        if not record:
            if name == "scale_noise":  # (sample, timestep, noise)
                record["image"], record["noise"] = args[0], args[2]
            else:  # (original_samples, noise, timesteps)
                record["image"], record["noise"] = args[0], args[1]
        return original(*args, **kwargs)

    setattr(scheduler, name, hook)
    try:
        yield record
    finally:
        delattr(scheduler, name)


def base_call(case: Case) -> dict[str, Any]:
    return {"num_inference_steps": 2, "output_type": "latent", **case.call}


def first_input(inputs: list[torch.Tensor]) -> torch.Tensor:
    """The denoiser's first input for the B samples (one half of a CFG-doubled batch)."""
    x = inputs[0]
    if x.shape[0] == 2 * B:
        torch.testing.assert_close(x[:B], x[B:], rtol=0, atol=0)  # CFG: the same latents twice
        x = x[B:]
    assert x.shape[0] == B, f"first denoiser input has batch {x.shape[0]}, expected {B}"
    return x


def own_run(pipe, case: Case) -> torch.Tensor:
    """The first denoiser input when the pipeline draws its own noise (no coupling)."""
    call = base_call(case)
    if case.prompts is not None:
        if case.one_per_prompt:
            call["prompt"] = [p for p in case.prompts for _ in range(K)]
        else:
            call["prompt"] = case.prompts
            call[case.per_prompt] = K
    else:
        call[case.per_prompt] = K
    with capture_denoiser_inputs(pipe) as inputs:
        pipe(generator=[seeded(s) for s in SEEDS for _ in range(K)], **call)
    return first_input(inputs)


def coupled_run(pipe, case: Case, **overrides):
    """generate with the repulsive coupling: (first input [B, ...], served noise, record, out)."""
    call = {**base_call(case), **overrides}
    with (
        served_noise() as served,
        noised_image(pipe) as record,
        capture_denoiser_inputs(pipe) as inputs,
    ):
        out = generate(pipe, case.prompts, "repulsive", K, generator=generators(), **call)
    assert len(served) == 1, f"{len(served)} draws were coupled, expected exactly the initial one"
    return first_input(inputs), served[0], record, out


def scalar_fit(target: torch.Tensor, parts: list[torch.Tensor]) -> tuple[list[float], float]:
    """Least-squares scalars c with target ~ sum c_i parts_i; (c, max residual / max |target|)."""
    a = torch.stack([p.flatten().double() for p in parts], dim=1)
    y = target.flatten().double()
    coef = torch.linalg.lstsq(a, y.unsqueeze(1)).solution.squeeze(1)
    residual = (a @ coef - y).abs().max() / y.abs().max()
    return coef.tolist(), float(residual)


def assert_groups_sum_to_zero(x: torch.Tensor) -> None:
    groups = x.double().reshape(len(PROMPTS), K, -1)
    scale = groups.abs().max()
    assert groups.sum(1).abs().max() < 1e-5 * scale  # each prompt's gallery sums to zero
    assert (groups[0, 0] + groups[1, 0]).abs().max() > 0.1 * scale  # across prompts it does not


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pipeline_initial_draw_is_coupled(pipes, case):
    pipe = pipes(case)
    own = own_run(pipe, case)
    x, noise, record, out = coupled_run(pipe, case)
    assert x.shape == own.shape  # the pipeline's own latent shape, whatever its size rules
    assert noise.shape[0] == B
    assert_groups_sum_to_zero(noise)
    if not case.image_conditioned:
        # x = c * pack(noise): compare the sorted entries of each sample (packing permutes them;
        # Kontext appends its image tokens after the noise tokens).
        for i in range(B):
            row = x[i].flatten()[: noise[i].numel()]
            (c,), residual = scalar_fit(row.sort().values, [noise[i].flatten().sort().values])
            assert c > 0.1 and residual < 1e-5, (c, residual)
        assert_groups_sum_to_zero(x.flatten(1)[:, : noise[0].numel()])
        if case.image_tokens:  # another image: the same noise tokens, other image tokens
            x_black, noise_black, _, out_black = coupled_run(pipe, case, image=picture(None))
            assert torch.equal(noise_black, noise)
            n = noise[0].numel()
            torch.testing.assert_close(x_black.flatten(1)[:, :n], x.flatten(1)[:, :n])
            assert (x_black.flatten(1)[:, n:] - x.flatten(1)[:, n:]).abs().max() > 1e-2
            # 4 image tokens among 1,028 in a random tiny transformer move the output a little;
            # an ignored image would leave it bit for bit the same.
            assert (out_black.images - out.images).abs().max() > 1e-4
    else:
        image, used = record["image"], record["noise"]
        torch.testing.assert_close(used.float().cpu(), noise.to(used.dtype).float(), rtol=0, atol=0)
        pack = (
            (lambda t: pipe._pack_latents(t, *t.shape))
            if hasattr(pipe, "_pack_latents")
            else (lambda t: t)
        )
        (alpha, beta), residual = scalar_fit(x, [pack(image.float()), pack(noise)])
        assert alpha > 0.1 and beta > 0.1 and residual < 1e-5, (alpha, beta, residual)
        assert_groups_sum_to_zero(x - alpha * pack(image.float()))
        check_image_is_respected(pipe, case, x, out, record)
    check_latents_for(pipe, case, x)


def check_image_is_respected(pipe, case: Case, x, out, record) -> None:
    x_black, _, record_black, out_black = coupled_run(pipe, case, image=picture(None))
    assert (record["image"] - record_black["image"]).abs().max() > 1e-2
    assert (x - x_black).abs().max() > 1e-2  # the image is in the denoiser's input
    final, final_black = out.images, out_black.images
    assert (final - final_black).abs().max() > 1e-2  # and in the output
    if case.inpaint:  # outside the mask the final latents are the image latents exactly
        keep = torch.nn.functional.interpolate(
            (torch.from_numpy(np.array(MASK)) < 128).float()[None, None], size=final.shape[-2:]
        ).bool()
        keep = keep.expand_as(final)
        image = record["image"].to(final.dtype)
        torch.testing.assert_close(final[keep], image[keep], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(final[~keep], image[~keep], atol=1e-2)


def check_latents_for(pipe, case: Case, x) -> None:
    """latents_for + pipe(latents=...) gives generate's first input, or refuses clearly."""
    call = base_call(case)
    if case.latents_for is None:
        with pytest.raises(UnsupportedPipelineError, match=type(pipe).__name__) as error:
            latents_for(pipe, "repulsive", num_images_per_prompt=K, num_prompts=2)
        assert "couplednoise.generate" in str(error.value)
        return
    latents = latents_for(
        pipe,
        "repulsive",
        num_images_per_prompt=K,
        num_prompts=len(PROMPTS) if case.prompts else 2,
        height=call.get("height"),
        width=call.get("width"),
        generator=generators(),
        **case.latents_for,
    )
    if case.prompts is None:
        per_prompt = {case.per_prompt: K}
    elif case.one_per_prompt:
        per_prompt = {"prompt": [p for p in case.prompts for _ in range(K)]}
    else:
        per_prompt = {"prompt": case.prompts, case.per_prompt: K}
    with capture_denoiser_inputs(pipe) as inputs:
        pipe(latents=latents, **per_prompt, **call)
    torch.testing.assert_close(first_input(inputs), x, rtol=0, atol=0)


def test_latents_for_refuses_what_it_cannot_size_with_a_named_reason(pipes):
    by_id = {c.id: c for c in CASES}
    reasons = {
        "flux-img2img": "image-conditioned",
        "sd15-inpaint": "image-conditioned",
        "wan": "video",
        "ltx": "video",
    }
    for case_id, reason in reasons.items():
        pipe = pipes(by_id[case_id])
        with pytest.raises(UnsupportedPipelineError, match=reason):
            couplednoise.latent_shape(pipe)
    # PixArt's binning only knows some transformer sample sizes: a clear ValueError, no guess.
    pixart = pipes(by_id["pixart-sigma-binning"])
    with pytest.raises(ValueError, match="sample_size"):
        couplednoise.latent_shape(
            type(pixart)(**{**pixart.components, "transformer": _resized(pixart)})
        )
    assert couplednoise.latent_shape(pixart, 224, 224) == (4, 32, 32)
    assert couplednoise.latent_shape(pixart, 224, 224, use_resolution_binning=False) == (4, 28, 28)


def _resized(pipe):
    """PixArt's transformer with a config sample_size its binning does not know (24)."""
    transformer = type(pipe.transformer).from_config({**pipe.transformer.config, "sample_size": 24})
    return transformer.eval()


class _Stopped(Exception):
    """Raised at the denoiser's first call: the pipeline got as far as its initial draw."""


def own_draw_shape(pipe, **call) -> tuple[int, ...]:
    """The shape of the pipeline's own initial draw for ``call`` (it stops before denoising)."""

    def stop(*_):
        raise _Stopped

    module = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    handle = module.register_forward_pre_hook(stop)
    try:
        with pytest.raises(_Stopped), coupled(pipe, "independent") as seam:
            pipe(**call)
    finally:
        handle.remove()
    return seam.shape


@pytest.mark.parametrize(
    ("family", "pipeline_class", "call", "sizes"),
    [
        # Panorama: 512 x 2048 from its signature (a 64 x 256 grid), and a given size.
        ("sd15", "StableDiffusionPanoramaPipeline", {"prompt": "x"}, [{}, {"height": 256}]),
        # Kandinsky 2.2 rounds the size up to multiples of 4 with its MoVQ factor 2.
        ("kandinsky22", None, dict(KANDINSKY_EMBEDS), [{"height": 66, "width": 98}, {}]),
        ("ldm", None, {"prompt": "x"}, [{}, {"height": 128, "width": 64}]),
        # FLUX Kontext: the aspect ratio of the request, scaled to max_area.
        (
            "flux_kontext",
            None,
            {"prompt": "x", "image": IMAGE, "_auto_resize": False, **T5},
            [{"height": 64, "width": 128, "max_area": 512**2}],
        ),
        # Binning at other aspect ratios, and HunyuanDiT's floor to 16 px without binning.
        (
            "pixart_sigma",
            None,
            {"prompt": "x", "clean_caption": False, **T5},
            [{"height": 200, "width": 400}],
        ),
        (
            "sana",
            None,
            {"prompt": "x", "complex_human_instruction": None, **T5},
            [{"height": 1000, "width": 500}],
        ),
        (
            "hunyuan_dit",
            None,
            {"prompt": "x"},
            [{"height": 100, "width": 200, "use_resolution_binning": False}],
        ),
    ],
    ids=["panorama", "kandinsky22", "ldm", "flux-kontext", "pixart-sigma", "sana", "hunyuan-dit"],
)
def test_latents_for_size_is_the_pipelines_own(pipes, family, pipeline_class, call, sizes):
    pipe = pipes(Case(f"{family}-{pipeline_class}", family, {}, pipeline_class=pipeline_class))
    for size in sizes:
        expected = own_draw_shape(pipe, num_inference_steps=1, **call, **size)
        batch = expected[0]
        assert couplednoise.latent_grid(pipe, **size) == expected[1:], (size, expected)
        latents = latents_for(pipe, "repulsive", num_images_per_prompt=batch, **size)
        if hasattr(pipe, "_pack_latents"):  # FLUX Kontext: the grid packed into tokens
            c, h, w = expected[1:]
            expected = (batch, (h // 2) * (w // 2), 4 * c)
        assert tuple(latents.shape) == expected
