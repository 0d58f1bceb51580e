"""couplednoise web demo: the independent and the coupled gallery from one seed, side by side.

    python app.py                                   # built-in lab model, http://127.0.0.1:7860
    python app.py --model /models/sd15 --model stabilityai/stable-diffusion-xl-base-1.0

Only the models named here are offered (plus the lab); the browser picks among them and never
supplies a path, hub id or code. Models load on first use, from local files only, on the best
device. Nothing leaves the machine: analytics off, no share link, fonts from the system. The work
(generation, metrics, the run zip) is couplednoise.eval.demo (the engine `couplednoise demo` uses
too); this file is the UI around it. Every generating route goes through Gradio's queue (no direct
REST route), one generation at a time per cached pipeline, with caps on uploads and bodies.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before importing gradio: no telemetry lookups
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models and CLIP weights come from local files only

import argparse
import contextlib
import inspect
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from couplednoise.eval.backbones.loading import Backbones, MissingWeightsError, load_clip
from couplednoise.eval.demo.comparison import (
    TABLE_HEADERS,
    Limits,
    Request,
    compare,
    table,
    warm_up,
    write_run_zip,
)
from couplednoise.eval.demo.engine import LAB_SIZE_RANGE, Models, model_defaults, size_range
from couplednoise.pipelines.builtin import example_prompts, installed_builtins

MAX_UPLOAD = "16mb"  # an uploaded background image for the mask editor
MAX_BODY_BYTES = 32 * 2**20  # any request body (a painted mask arrives as base64 in the body)
MAX_IMAGE_PIXELS = 4096 * 4096  # PIL refuses to decode larger images (decompression bombs)
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

REGIONS = ("painted region", "lowpass band", "highpass band")
# The couplings a gallery can use (every one in couplednoise.COUPLINGS but the batch wrapper
# "grouped": a gallery is one group) -> the controls it uses (the others are hidden).
PARAMETERS = {
    "independent": (),
    "repulsive": ("strength",),
    "equicorrelated": ("rho",),
    "antithetic": (),
    "orthogonal": (),
    "gaussian": ("correlation",),
    "subspace": ("region", "share"),
    "pool": ("groups", "zero_sum"),
}
COUPLING_CONTROLS = (
    "strength",
    "rho",
    "correlation",
    "region",
    "share",
    "cutoff",
    "mask",
    "groups",
    "zero_sum",
)
DISPLAY_MIN = 128  # small images (the lab's 32 px) are shown enlarged, nearest neighbour
CSS = """
.pair-gallery img { image-rendering: pixelated; }
.pair-gallery .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important; }
"""
THEME_FONTS = {  # system fonts: the default theme would fetch Google Fonts
    "font": ["ui-sans-serif", "system-ui", "sans-serif"],
    "font_mono": ["ui-monospace", "monospace"],
}


def mask_from_editor(value: dict | None) -> np.ndarray | None:
    """The painted region of a gr.ImageMask value as {0, 1} [H, W] (None when nothing is drawn).

    The strokes are the alpha channel of the editor's layers; a background image, if uploaded,
    is only a guide to paint on.
    """
    if not value or not value.get("layers"):
        return None
    alphas = [np.asarray(layer)[..., 3] for layer in value["layers"] if np.ndim(layer) == 3]
    if not alphas:
        return None
    mask = np.any(np.stack(alphas) > 0, axis=0).astype(np.uint8)
    return mask if mask.any() else None


def parse_matrix(text: str) -> list[list[float]]:
    """A correlation matrix typed as rows separated by ';' or new lines, entries by ',' or spaces."""
    rows = [r for r in text.replace(";", "\n").splitlines() if r.strip()]
    if not rows:
        raise ValueError("gaussian coupling: type a correlation matrix, e.g. '1, -0.5; -0.5, 1'")
    try:
        return [[float(x) for x in r.replace(",", " ").split()] for r in rows]
    except ValueError as error:
        raise ValueError(
            f"gaussian coupling: the correlation matrix has a non-number ({error})"
        ) from None


def coupling_spec(
    name: str,
    strength: float,
    rho: float,
    region: str,
    share: float,
    cutoff: float,
    groups: int = 16,
    zero_sum: bool = False,
    num_images: int = 2,
) -> str:
    """The coupling spec the controls describe (scalar parameters only). A pool is ``groups``
    groups of the gallery size (``num_images``), planned by the noise-only DCT predictor (a
    browser never names a learned predictor's file), with zero-sum blocks when ``zero_sum``."""
    if name not in PARAMETERS:
        raise ValueError(f"unknown coupling {name!r}; choose one of {', '.join(PARAMETERS)}")
    if name == "repulsive":
        return f"repulsive:strength={float(strength)}"
    if name == "equicorrelated":
        return f"equicorrelated:rho={float(rho)}"
    if name == "subspace":
        if region not in REGIONS:
            raise ValueError(f"subspace region must be one of {', '.join(REGIONS)}")
        if region == REGIONS[0]:
            return f"subspace:share={float(share)}"
        band = region.split()[0]
        return f"subspace:band={band},cutoff={float(cutoff)},share={float(share)}"
    if name == "pool":
        if isinstance(groups, float) and groups.is_integer():
            groups = int(groups)
        if isinstance(groups, bool) or not isinstance(groups, int) or not 2 <= groups <= 256:
            raise ValueError(f"pool groups must be a whole number in [2, 256], got {groups!r}")
        spec = f"pool:pool_size={groups * int(num_images)},predictor=dct"
        return spec + (",keep_blocks=true,coupling=repulsive" if zero_sum else "")
    return name


def display_images(images) -> list[tuple[np.ndarray, str]]:
    """Gallery items (uint8 [H, W, 3], caption) from images [K, 3, H, W] in [0, 1]."""
    pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    factor = max(1, -(-DISPLAY_MIN // pixels.shape[1]))
    pixels = pixels.repeat(factor, axis=1).repeat(factor, axis=2)
    return [(p, f"#{k}") for k, p in enumerate(pixels)]


@contextlib.contextmanager
def readable_errors():
    """Bad input and missing weights become a gr.Error: a message in the UI, no traceback."""
    try:
        yield
    except (ValueError, TypeError, MissingWeightsError) as error:
        raise gr.Error(str(error), print_exception=False) from error


class Demo:
    """The app's state: offered models, limits, metric backbones and where run zips go."""

    def __init__(self, models: Models, limits: Limits, backbones: Backbones | None, runs: Path):
        self.models, self.limits, self.backbones, self.runs = models, limits, backbones, runs

    def request(
        self,
        prompt,
        negative,
        model,
        coupling,
        strength,
        rho,
        correlation,
        region,
        share,
        cutoff,
        mask,
        num_images,
        seed,
        steps,
        guidance,
        size,
        groups=16,
        zero_sum=False,
    ) -> Request:
        """A validated Request from the UI's values (ValueError with a readable message).

        The arguments are the input controls of ``build_demo`` by name, in the order of the
        ``generate`` API.
        """
        self.models.check(model)
        if seed is None or num_images is None or steps is None or size is None:
            raise ValueError("gallery size, seed, steps and image size must all be filled in")
        return Request(
            model=model,
            prompt=prompt or "",
            negative_prompt=negative or "",
            coupling=coupling_spec(
                coupling, strength, rho, region, share, cutoff, groups, zero_sum, num_images
            ),
            num_images=num_images,
            seed=seed,
            steps=steps,
            guidance=guidance,
            size=size,
            mask=mask_from_editor(mask) if coupling == "subspace" else None,
            correlation=parse_matrix(correlation or "") if coupling == "gaussian" else None,
        )

    def generate(self, *values, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        """Both galleries, the metrics table and the run zip; bad input -> gr.Error."""
        with readable_errors():
            request = self.request(*values)
            progress(0.0, desc=f"loading {request.model}")
            with self.models.lease(request.model, request.size) as pipe:
                result = compare(
                    pipe,
                    request,
                    limits=self.limits,
                    backbones=self.backbones,
                    progress=lambda fraction, text: progress(fraction, desc=text),
                )
            run_id = uuid.uuid4().hex[:8]
            path = write_run_zip(result, self.runs / f"couplednoise-run-{run_id}.zip")
        return (
            display_images(result.independent.images),
            display_images(result.coupled.images),
            table(result.rows),
            gr.update(value=str(path), visible=True, label=f"Download run {run_id} (.zip)"),
        )

    def model_settings(self, model: str, progress=gr.Progress()):  # noqa: B008
        """Size range, steps, guidance and, for a built-in model, an example prompt in its own
        prompt language, for ``model`` (loading it on first selection)."""
        with readable_errors():
            progress(0.0, desc=f"loading {model}")
            pipe = self.models.get(model)
        low, high, step, default = size_range(pipe, self.limits.max_size)
        defaults = model_defaults(pipe)
        prompts = example_prompts(model)
        return (
            gr.update(minimum=low, maximum=high, step=step, value=default),
            gr.update(value=min(defaults["steps"], self.limits.max_steps)),
            gr.update(value=defaults["guidance"]),
            gr.update(value=prompts[0]) if prompts else gr.update(),
        )


def coupling_controls(name: str, region: str) -> list[Any]:
    """Visibility of the COUPLING_CONTROLS for a coupling (and subspace region)."""
    used = PARAMETERS.get(name, ())
    subspace = name == "subspace"
    return [
        gr.update(visible="strength" in used),
        gr.update(visible="rho" in used),
        gr.update(visible="correlation" in used),
        gr.update(visible=subspace),
        gr.update(visible=subspace),
        gr.update(visible=subspace and region != REGIONS[0]),
        gr.update(visible=subspace and region == REGIONS[0]),
        gr.update(visible="groups" in used),
        gr.update(visible="zero_sum" in used),
    ]


def pair_gallery(label: str) -> gr.Gallery:
    """One of the two side-by-side galleries (elem_id: the label in lower case)."""
    return gr.Gallery(
        label=label,
        format="png",
        columns=4,
        elem_classes="pair-gallery",
        elem_id=label.lower(),
        object_fit="contain",
    )


def input_controls(models: Models, limits: Limits) -> dict[str, Any]:
    """The input column: Demo.request's arguments by name (created in layout order)."""
    return {
        "prompt": gr.Textbox(label="Prompt", value="a circle", elem_id="prompt"),
        "negative": gr.Textbox(label="Negative prompt", elem_id="negative"),
        "model": gr.Dropdown(models.names, value=models.names[0], label="Model", elem_id="model"),
        "coupling": gr.Dropdown(
            list(PARAMETERS), value="repulsive", label="Coupling", elem_id="coupling"
        ),
        "strength": gr.Slider(
            0,
            1,
            value=1.0,
            step=0.05,
            label="strength",
            info="1 = zero-sum, maximally repulsive",
        ),
        "rho": gr.Slider(
            -1,
            1,
            value=0.3,
            step=0.05,
            label="rho",
            visible=False,
            info="pairwise correlation, at least -1/(K-1)",
        ),
        "correlation": gr.Textbox(
            label="correlation matrix (K x K)",
            visible=False,
            placeholder="1, -0.5; -0.5, 1",
            lines=3,
        ),
        "region": gr.Radio(
            list(REGIONS),
            value=REGIONS[0],
            label="shared subspace",
            visible=False,
            elem_id="region",
        ),
        "share": gr.Slider(
            0,
            1,
            value=1.0,
            step=0.05,
            label="share",
            visible=False,
            info="1 = the same noise in the shared region",
        ),
        "cutoff": gr.Slider(
            0.01,
            0.5,
            value=0.125,
            step=0.005,
            visible=False,
            label="band cutoff (cycles per latent pixel)",
        ),
        "mask": gr.ImageMask(
            label="Shared region (Brush)",
            type="numpy",
            image_mode="RGBA",
            canvas_size=(256, 256),
            visible=False,
            sources=["upload"],
            elem_id="mask",
        ),
        "groups": gr.Slider(
            2,
            64,
            value=16,
            step=1,
            visible=False,
            label="pool groups B",
            info="a pool of B x K noises is split into B galleries by predicted outcome",
        ),
        "zero_sum": gr.Checkbox(
            False, visible=False, label="zero-sum pool blocks (each gallery sums to zero)"
        ),
        "num_images": gr.Slider(
            2,
            limits.max_images,
            value=min(8, limits.max_images),
            step=1,
            label="Gallery size",
            elem_id="num_images",
        ),
        # precision=None: a seed of 1.5 reaches Request (and is refused) instead of rounding
        "seed": gr.Number(value=0, minimum=0, label="Seed", elem_id="seed"),
        "steps": gr.Slider(
            1,
            limits.max_steps,
            value=min(20, limits.max_steps),
            step=1,
            label="Steps",
            elem_id="steps",
        ),
        "guidance": gr.Slider(
            0, 20, value=model_defaults("lab")["guidance"], step=0.5, label="Guidance"
        ),
        "size": gr.Slider(
            *LAB_SIZE_RANGE[:2],
            value=LAB_SIZE_RANGE[3],
            step=LAB_SIZE_RANGE[2],
            label="Image size (pixels)",
            elem_id="size",
        ),
    }


def build_demo(
    models: Models,
    *,
    limits: Limits | None = None,
    backbones: Backbones | None = None,
    runs: Path | None = None,
    max_queue: int = 8,
    concurrency: int = 1,
) -> gr.Blocks:
    """The Gradio app (not launched; see ``launch_options``). Its queue holds at most
    ``max_queue`` requests and runs ``concurrency`` at once; ``api_open=False`` closes the direct
    REST routes, so every generation goes through the queue and its limits."""
    limits = limits or Limits()
    runs = runs or Path(tempfile.mkdtemp(prefix="couplednoise-app-"))
    state = Demo(models, limits, backbones, runs)
    with gr.Blocks(
        title="couplednoise demo", analytics_enabled=False, delete_cache=(900, 3600)
    ) as demo:
        gr.Markdown(
            "# couplednoise: independent vs coupled noise\n"
            "Both galleries start from the **same seed**; every noise is exactly N(0, I), only "
            "their dependence across the gallery differs. The table compares how diverse they are."
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                controls = input_controls(models, limits)
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                with gr.Row():
                    independent = pair_gallery("Independent")
                    coupled = pair_gallery("Coupled")
                metrics = gr.Dataframe(
                    headers=TABLE_HEADERS,
                    label="Metrics",
                    interactive=False,
                    wrap=True,
                    elem_id="metrics",
                    column_widths=["22%", "13%", "13%", "52%"],
                )
                download = gr.DownloadButton(
                    "Download run (.zip)", visible=False, elem_id="download"
                )
        coupling, region, model = controls["coupling"], controls["region"], controls["model"]
        shown = [controls[name] for name in COUPLING_CONTROLS]
        for trigger in (coupling, region):
            trigger.change(coupling_controls, [coupling, region], shown, queue=False)
        settings = [controls[name] for name in ("size", "steps", "guidance", "prompt")]
        model.change(state.model_settings, model, settings, concurrency_limit=1)
        # the generate API takes the controls in the order of Demo.request's arguments
        names = list(inspect.signature(Demo.request).parameters)[1:]
        button.click(
            state.generate,
            [controls[name] for name in names],
            [independent, coupled, metrics, download],
            api_name="generate",
        )
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency, api_open=False)
    return demo


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` (413 when the client declares
    its length; a body that streams past the limit is cut off as a disconnect)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            body = f"request body over {self.max_bytes // 2**20} MB".encode()
            await send({"type": "http.response.start", "status": 413, "headers": []})
            return await send({"type": "http.response.body", "body": body})
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    return {"type": "http.disconnect"}
            return message

        return await self.app(scope, limited, send)


def launch_options() -> dict[str, Any]:
    """Local-only launch settings: loopback, no share link, no server-side rendering, no fonts
    or scripts from outside (Gradio 6 takes theme and css in launch)."""
    from starlette.middleware import Middleware

    return {
        "server_name": "127.0.0.1",
        "share": False,
        "ssr_mode": False,
        "theme": gr.themes.Default(**THEME_FONTS),
        "css": CSS,
        "show_error": True,
        "max_file_size": MAX_UPLOAD,
        "app_kwargs": {"middleware": [Middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)]},
    }


def load_backbones(clip: str | None, pretrained: str | None) -> Backbones | None:
    """A CLIP backbone for the alignment row, when the operator names one (else None)."""
    if clip is None:
        return None
    # local-dir:/path and hf-hub:org/name carry their own weights; built-in names take a tag
    return Backbones(clip=load_clip(clip, None if ":" in clip else pretrained))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="PATH_OR_ID",
        help="a diffusers folder or a hub id in the local HF cache (repeatable); "
        "the lab model is always offered",
    )
    parser.add_argument(
        "--no-builtins",
        action="store_true",
        help="offer only the lab and the --model entries (default: also every built-in model "
        "that is installed here, e.g. terrain, learned-lab)",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: 7860 or next free)")
    parser.add_argument(
        "--clip",
        default=None,
        metavar="MODEL",
        help="open_clip model for the CLIP-score row, e.g. ViT-L-14-quickgelu or "
        "local-dir:/path (weights must be local)",
    )
    parser.add_argument(
        "--clip-pretrained",
        default="openai",
        metavar="TAG_OR_FILE",
        help="open_clip pretrained tag or checkpoint file for --clip",
    )
    parser.add_argument("--device", default=None, help="cuda / mps / cpu (default: best available)")
    parser.add_argument("--max-images", type=int, default=16, help="cap on the gallery size")
    parser.add_argument("--max-steps", type=int, default=50, help="cap on denoising steps")
    parser.add_argument("--max-size", type=int, default=1024, help="cap on the image side")
    parser.add_argument("--max-queue", type=int, default=8, help="requests waiting at most")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="generations at once (default 1: one uses the whole device)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("max_images", "max_steps", "max_size", "max_queue", "concurrency"):
        if getattr(args, name) < (2 if name == "max_images" else 1):
            raise SystemExit(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
    try:
        backbones = load_backbones(args.clip, args.clip_pretrained)
    except (ValueError, MissingWeightsError) as error:
        raise SystemExit(f"--clip: {error}") from error
    limits = Limits(args.max_images, args.max_steps, args.max_size)
    builtins = [] if args.no_builtins else installed_builtins()[0]
    models = Models([*builtins, *args.model], device=args.device)
    for name, reason in models.skipped.items():
        print(f"app.py: --model {name} is not offered: {reason}", file=sys.stderr)
    warm_up(models)
    demo = build_demo(
        models,
        limits=limits,
        backbones=backbones,
        max_queue=args.max_queue,
        concurrency=args.concurrency,
    )
    demo.launch(server_port=args.port, **launch_options())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
