"""The web demo: its engine (couplednoise.eval.demo), app.py helpers, and the running app via
gradio_client (queue only, serialised per pipeline, size caps)."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import app
from couplednoise import COUPLINGS, Equicorrelated, Repulsive, Subspace, get_coupling
from couplednoise.eval import Backbones, clip_score_from_features, gallery_metrics
from couplednoise.eval.demo.comparison import (
    NO_CLIP,
    Limits,
    Request,
    compare,
    load_request,
    rerun,
    write_run_zip,
)
from couplednoise.eval.demo.engine import Models, pipeline_spec, size_range
from couplednoise.eval.runs.galleries import find_galleries
from couplednoise.pipelines.generation import generate_gallery
from couplednoise.pipelines.lab import parse_lab_spec
from couplednoise.pipelines.lab.readout import gallery_readout

GENERIC = ["l2", "ms_ssim", "vendi_pixel"]
LAB_ROWS = ["lab_alignment", "lab_scenes", "lab_attribute_coverage"]
FAST = {"steps": 8, "guidance": 1.0, "size": 32}


@pytest.fixture(scope="module")
def models():
    return Models(device="cpu")


@pytest.fixture(scope="module")
def lab(models):
    return models.get("lab", 32)


def lab_request(coupling="repulsive", num_images=4, **kwargs) -> Request:
    fields = {"model": "lab", "prompt": "a circle", "seed": 3, **FAST, **kwargs}
    return Request(coupling=coupling, num_images=num_images, **fields)


def box_mask(size=64, low=16, high=48) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[low:high, low:high] = 1
    return mask


# --- UI helpers -------------------------------------------------------------------------------


def test_mask_from_editor_reads_the_painted_alpha_and_ignores_the_background():
    background = np.full((40, 50, 4), 255, np.uint8)  # an uploaded reference: a guide only
    stroke = np.zeros((40, 50, 4), np.uint8)
    stroke[5:15, 10:30, 3] = 200
    other = np.zeros((40, 50, 4), np.uint8)
    other[30:35, 0:5, 3] = 1
    value = {"background": background, "layers": [stroke, other], "composite": background}
    mask = app.mask_from_editor(value)
    expected = np.zeros((40, 50), np.uint8)
    expected[5:15, 10:30] = 1
    expected[30:35, 0:5] = 1
    np.testing.assert_array_equal(mask, expected)
    assert app.mask_from_editor({"background": background, "layers": [], "composite": None}) is None
    assert app.mask_from_editor({"layers": [np.zeros((4, 4, 4), np.uint8)]}) is None
    assert app.mask_from_editor(None) is None


def test_parse_matrix_and_its_errors():
    assert app.parse_matrix("1, -0.5; -0.5 1") == [[1.0, -0.5], [-0.5, 1.0]]
    assert app.parse_matrix("1 0\n0 1\n") == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="type a correlation matrix"):
        app.parse_matrix("  ")
    with pytest.raises(ValueError, match="non-number"):
        app.parse_matrix("1, x; 0, 1")


def test_coupling_spec_builds_every_coupling_with_its_controls():
    assert set(app.PARAMETERS) == set(COUPLINGS) - {"grouped"}  # every gallery coupling offered
    built = {}
    for name in app.PARAMETERS:
        spec = app.coupling_spec(name, 0.5, 0.25, app.REGIONS[1], 0.75, 0.2)
        overrides = {"correlation_matrix": torch.eye(2)} if name == "gaussian" else {}
        built[name] = get_coupling(spec, **overrides)
        assert built[name].name == name
    assert built["repulsive"] == Repulsive(0.5)
    assert built["equicorrelated"] == Equicorrelated(0.25)
    subspace = built["subspace"]
    assert (subspace.band, subspace.cutoff, subspace.share) == ("lowpass", 0.2, 0.75)
    assert app.coupling_spec("subspace", 1, 0, app.REGIONS[0], 0.5, 0.1) == "subspace:share=0.5"
    pool = get_coupling(app.coupling_spec("pool", 1, 0, app.REGIONS[0], 1, 0.1, 8, True, 4))
    assert (pool.pool_size, pool.keep_blocks, pool.coupling.name) == (32, True, "repulsive")
    with pytest.raises(ValueError, match="pool groups"):
        app.coupling_spec("pool", 1, 0, app.REGIONS[0], 1, 0.1, 1.5, False, 4)
    with pytest.raises(ValueError, match="unknown coupling"):
        app.coupling_spec("bogus", 1, 0, app.REGIONS[0], 1, 0.1)


@pytest.mark.parametrize("name", list(app.PARAMETERS))
def test_only_the_relevant_parameter_controls_are_visible(name):
    names = list(app.COUPLING_CONTROLS)
    for region in app.REGIONS:
        shown = {
            n for n, update in zip(names, app.coupling_controls(name, region)) if update["visible"]
        }
        expected = set(app.PARAMETERS[name])
        if name == "subspace":
            expected.add("mask" if region == app.REGIONS[0] else "cutoff")
        assert shown == expected


# --- requests and limits ----------------------------------------------------------------------


def test_requests_outside_the_limits_or_badly_formed_are_refused():
    limits = Limits(max_images=6, max_steps=10, max_size=64)
    for request, message in (
        (lab_request(num_images=7), "between 2 and 6"),
        (lab_request(num_images=1), "between 2 and 6"),
        (lab_request(steps=11), "steps must be between 1 and 10"),
        (lab_request(size=128), "capped at 64"),
    ):
        with pytest.raises(ValueError, match=message):
            limits.check(request)
    with pytest.raises(ValueError, match="whole number"):
        lab_request(num_images=2.5)
    with pytest.raises(ValueError, match="seed"):
        lab_request(seed=-1)


def test_coupling_inputs_are_checked_with_readable_messages():
    with pytest.raises(ValueError, match="paint the shared region"):
        lab_request("subspace:share=1.0").build_coupling()
    with pytest.raises(ValueError, match="paint the shared region"):
        lab_request("subspace", mask=np.zeros((8, 8))).build_coupling()
    with pytest.raises(ValueError, match="covers the whole image"):
        lab_request("subspace", mask=np.ones((8, 8))).build_coupling()
    with pytest.raises(ValueError, match="gallery has 4 images: give a 4 x 4"):
        lab_request("gaussian", correlation=[[1, 0], [0, 1]]).build_coupling()
    coupling = lab_request("subspace:share=0.5", mask=box_mask()).build_coupling()
    assert isinstance(coupling, Subspace) and coupling.share == 0.5
    assert coupling.mask.sum() == 32 * 32


def test_models_offers_only_the_named_ones_and_the_lab_at_its_sizes(models):
    assert models.names == ["lab"]
    with pytest.raises(ValueError, match="not offered"):
        models.get("/etc")
    assert parse_lab_spec(pipeline_spec("lab:scheduler=flow", 64)) == {
        **parse_lab_spec("lab:scheduler=flow"),
        "size": 64,
    }
    assert pipeline_spec("/models/sd", 64) == "/models/sd"
    with pytest.raises(ValueError, match="32 or 64"):
        pipeline_spec("lab", 48)
    twice = Models(["lab:size=64", "lab:size=64"])
    assert twice.names == ["lab", "lab:size=64"] and twice.skipped == {}


def test_model_settings_follow_the_chosen_model(models, tmp_path):
    demo = app.Demo(models, Limits(max_steps=12), None, tmp_path)
    size, steps, guidance, prompt = demo.model_settings("lab")
    assert (size["minimum"], size["maximum"], size["step"], size["value"]) == (32, 64, 32, 32)
    assert (steps["value"], guidance["value"]) == (12, 1.0)  # lab default 20, capped at 12
    assert prompt["value"] == "a red circle"  # the lab's own prompt language


def test_installed_builtin_models_are_offered_and_missing_ones_say_why(monkeypatch):
    from couplednoise.pipelines import builtin

    ready, missing = builtin.installed_builtins()
    assert {"lab", "learned-lab"} <= set(ready)
    assert "terrain" in ready or "pip install" in missing["terrain"]  # an optional extra
    offered = Models(ready, device="cpu")
    assert offered.names[0] == "lab" and set(ready) <= set(offered.names)
    entry = dataclasses.replace(builtin.BUILTIN_MODELS["learned-lab"], check=_no_weights)
    monkeypatch.setitem(builtin.BUILTIN_MODELS, "learned-lab", entry)
    ready, missing = builtin.installed_builtins()
    assert "learned-lab" not in ready and "no weights" in missing["learned-lab"]
    assert app.parse_args(["--no-builtins"]).no_builtins and not app.parse_args([]).no_builtins


def _no_weights(spec):
    raise ValueError("no weights here")


# --- the comparison on the lab model ---------------------------------------------------------


def test_compare_pairs_galleries_by_seed_and_tables_the_eval_and_ground_truth_metrics(lab):
    request = lab_request("repulsive", num_images=4)
    stages = []
    result = compare(lab, request, progress=lambda fraction, text: stages.append(text))
    assert stages == ["independent gallery", "coupled gallery", "metrics", "done"]
    options = {"num_images": 4, "seed": 3, "num_inference_steps": 8, "guidance_scale": 1.0}
    for gallery, coupling in ((result.independent, "independent"), (result.coupled, "repulsive")):
        direct = generate_gallery(lab, "a circle", coupling, **options).images
        torch.testing.assert_close(gallery.images, direct, rtol=0, atol=0)
    assert not torch.equal(result.independent.images, result.coupled.images)
    rows = {row.name: row for row in result.rows}
    assert list(rows) == [*GENERIC, "clip_score", *LAB_ROWS]
    for side, images in (("independent", result.independent), ("coupled", result.coupled)):
        expected = gallery_metrics(images.images)
        for name in GENERIC:
            assert getattr(rows[name], side) == pytest.approx(expected[name])
        readout = gallery_readout(images.images, "a circle", lab.world)
        assert getattr(rows["lab_alignment"], side) == readout.alignment
        assert getattr(rows["lab_scenes"], side) == readout.scene_coverage.distinct
        assert getattr(rows["lab_attribute_coverage"], side) == pytest.approx(
            readout.mean_attribute_coverage
        )
    assert rows["clip_score"].independent is None and rows["clip_score"].meaning == NO_CLIP


def test_bad_requests_fail_before_any_generation(lab, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "couplednoise.eval.demo.engine.generate_gallery", lambda *a, **k: calls.append(a)
    )
    for request, message in (
        (lab_request("equicorrelated:rho=-0.9"), r"-1/\(n-1\)"),
        (lab_request("subspace", mask=np.pad(np.ones((1, 1)), 31)), "no foreground left"),
        (lab_request(num_images=40), "between 2 and 16"),
    ):
        with pytest.raises(ValueError, match=message):
            compare(lab, request)
    assert calls == []


class MeanColourClip:
    """A stand-in CLIP embedder: image features = mean colour, text features = a fixed vector."""

    def embed_images(self, images):
        return images.mean(dim=(2, 3))

    def embed_texts(self, texts):
        return torch.tensor([[1.0, 0.5, 0.25]]).expand(len(texts), -1)


def test_clip_alignment_row_appears_when_a_clip_backbone_is_given(lab):
    clip = MeanColourClip()
    result = compare(lab, lab_request(num_images=2), backbones=Backbones(clip=clip))
    rows = {row.name: row for row in result.rows}
    assert "clip_score" in rows and rows["clip_score"].meaning != NO_CLIP
    expected = clip_score_from_features(
        clip.embed_images(result.coupled.images), clip.embed_texts(["a circle"])
    )
    assert rows["clip_score"].coupled == pytest.approx(float(expected))
    assert {"vendi_clip", "clip_distance"} <= set(rows)


def test_run_zip_holds_the_images_and_a_config_that_reproduces_them(lab, models, tmp_path):
    request = lab_request("subspace:share=1.0", mask=box_mask())
    result = compare(lab, request)
    path = write_run_zip(result, tmp_path / "run.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.zip"]  # no scratch left behind
    folder = tmp_path / "run"
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        archive.extractall(folder)
    pngs = {f"images/{g}/{k}.png" for g in ("independent", "coupled") for k in range(4)}
    assert pngs | {"config.json", "galleries.json", "metrics.csv", "mask.png"} <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["request"]["coupling"] == "subspace:share=1.0"
    assert config["metadata"]["seed"] == 3 and "torch" in config["metadata"]["versions"]
    loaded = load_request(folder)
    np.testing.assert_array_equal(loaded.mask, request.mask)
    again = rerun(folder, models)
    torch.testing.assert_close(again.coupled.images, result.coupled.images, rtol=0, atol=0)
    sources = {g.id: g for g in find_galleries(folder)}  # the `couplednoise score` layout
    assert set(sources) == {"independent", "coupled"} and len(sources["coupled"].files) == 4


# --- a Stable Diffusion checkpoint (tiny, random weights) ------------------------------------


def test_an_offered_checkpoint_loads_lazily_and_compares_within_its_size_range(tiny_pipeline_dir):
    path = str(tiny_pipeline_dir("sd15"))
    models = Models([path], device="cpu")
    assert models.names == ["lab", path] and models._cache == {}
    pipe = models.get(path)
    assert models.get(path) is pipe  # cached
    assert size_range(pipe, Limits().max_size) == (32, 96, 8, 64)
    assert size_range(pipe, 80) == (32, 80, 8, 64)
    fields = {"model": path, "prompt": "a cat", "seed": 0, "steps": 2, "guidance": 7.5}
    result = compare(pipe, Request(coupling="orthogonal", num_images=2, size=48, **fields))
    assert result.coupled.images.shape == (2, 3, 48, 48)
    assert [row.name for row in result.rows] == [*GENERIC, "clip_score"]
    with pytest.raises(ValueError, match="32 to 96 pixels in steps of 8"):
        compare(pipe, Request(coupling="orthogonal", num_images=2, size=100, **fields))


# --- the running app through gradio_client ---------------------------------------------------


@pytest.fixture(scope="module")
def client(models, tmp_path_factory):
    from gradio_client import Client

    demo = app.build_demo(models, runs=tmp_path_factory.mktemp("runs"), max_queue=16, concurrency=3)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **app.launch_options())
    assert url.startswith("http://127.0.0.1:")
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    client.url = url
    yield client
    demo.close()


def values(
    prompt="a circle", coupling="repulsive", num_images=4, model="lab", rho=0.3, seed=5, steps=8
):
    controls = [prompt, "", model, coupling, 1.0, rho, "", app.REGIONS[0], 1.0, 0.125, None]
    return [*controls, num_images, seed, steps, 1.0, 32]


def call(client, **kwargs):
    return client.predict(*values(**kwargs), api_name="/generate")


def test_client_generate_returns_two_galleries_a_table_and_the_run(client):
    independent, coupled, metrics, download = call(client, num_images=5)
    assert len(independent) == len(coupled) == 5
    assert metrics["headers"] == ["metric", "independent", "coupled", "meaning"]
    assert [row[0] for row in metrics["data"]] == [*GENERIC, "clip_score", *LAB_ROWS]
    assert [row[1:3] for row in metrics["data"]][3] == ["n/a", "n/a"]
    with zipfile.ZipFile(download["value"]) as archive:
        assert json.loads(archive.read("config.json"))["request"]["num_images"] == 5


def test_client_bad_inputs_are_readable_errors(client):
    from gradio_client.exceptions import AppError

    for kwargs, message in (
        ({"prompt": "a dragon"}, "unknown word"),
        ({"coupling": "equicorrelated", "rho": -0.9}, r"rho must be >= -1/\(n-1\)"),
        ({"coupling": "subspace"}, "paint the shared region"),
        ({"model": "/etc/passwd"}, "not offered|not in the list of choices"),
    ):
        with pytest.raises(AppError, match=message):
            call(client, **kwargs)


def test_concurrent_requests_with_mixed_step_counts_each_get_their_solo_images(client, tmp_path):
    """The cached lab pipeline's scheduler is shared state: requests with different step counts
    at once (concurrency 3) must each return exactly what they return alone."""
    requests = [dict(seed=s, steps=steps) for s, steps in enumerate([2, 9, 4, 12, 3, 7])]
    solo = {}
    alone = Models(device="cpu")
    for r in requests:
        with alone.lease("lab", 32) as pipe:
            request = Request(
                model="lab",
                prompt="a circle",
                coupling="repulsive",
                num_images=4,
                guidance=1.0,
                size=32,
                **r,
            )
            solo[(r["seed"], r["steps"])] = compare(pipe, request).coupled.images
    jobs = [(r, client.submit(*values(**r), api_name="/generate")) for r in requests]
    for r, job in jobs:
        coupled = job.result(timeout=300)[1]
        pixels = torch.stack(
            [
                torch.from_numpy(np.array(Image.open(item["image"]).convert("RGB")))
                for item in coupled
            ]
        )
        expected = (solo[(r["seed"], r["steps"])].clamp(0, 1) * 255).round().byte()
        expected = expected.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # shown x4
        assert torch.equal(pixels.permute(0, 3, 1, 2), expected), r


def test_the_direct_rest_route_is_closed_and_bodies_are_capped(client):
    import httpx

    base = client.url.rstrip("/")
    direct = httpx.post(f"{base}/gradio_api/run/generate", json={"data": values()}, timeout=60)
    assert direct.status_code == 404 and "queue" in direct.text
    big = httpx.post(
        f"{base}/gradio_api/queue/join",
        content=b"x" * (app.MAX_BODY_BYTES + 1),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert big.status_code == 413


def test_fractional_seeds_and_oversized_masks_are_refused(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="seed must be a whole number"):
        client.predict(*values(seed=1.5), api_name="/generate")
    with pytest.raises(ValueError, match="at most 4096 pixels a side"):
        lab_request("subspace", mask=np.ones((5000, 10), np.uint8))


def test_models_that_cannot_load_are_left_out_at_start_with_the_reason(tmp_path):
    models = Models(["/nonexistent/model", str(tmp_path)], device="cpu")
    assert models.names == ["lab"]
    assert "no such local folder" in models.skipped["/nonexistent/model"]
    assert "model_index.json" in models.skipped[str(tmp_path)]


def test_a_pool_gallery_compares_against_independent_from_the_same_seed(lab):
    spec = app.coupling_spec("pool", 1, 0, app.REGIONS[0], 1, 0.1, 8, False, 4)
    result = compare(lab, lab_request(spec, num_images=4))
    assert result.coupled.coupling.startswith("pool:pool_size=32")
    assert not torch.equal(result.independent.images, result.coupled.images)
    assert {row.name for row in result.rows} >= {"lab_scenes", "lab_attribute_coverage"}
