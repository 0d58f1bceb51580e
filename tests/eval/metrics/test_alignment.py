"""CLIP score / PickScore / embedders on tiny random-weight models, loaded through the real loaders."""

from __future__ import annotations

import pytest
import torch

from couplednoise.eval import (
    MissingWeightsError,
    clip_score,
    clip_score_from_features,
    load_clip,
    load_dino,
    load_hf_clip,
    pick_score,
)
from couplednoise.eval.backbones.embedders import resize_and_crop
from tests.tiny_models import byte_vocab, tiny_tokenizer

PROMPTS = ["a red cube on a table", "a dog", "two cats under a tree"]


def _images(n: int = 3, size: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    """A tiny transformers CLIP model + processor saved like a hub snapshot."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    vocab = byte_vocab()
    special = {
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={
            **small,
            **special,
            "vocab_size": len(vocab),
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
        },
        vision_config={**small, "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_hf_clip")
    CLIPModel(config).save_pretrained(path)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer()).save_pretrained(path)
    return path


def test_hf_clip_score_equals_torchmetrics_clip_score(hf_clip_dir):
    from torchmetrics.functional.multimodal import clip_score as tm_clip_score
    from transformers import CLIPModel, CLIPProcessor

    embedder = load_hf_clip(str(hf_clip_dir))
    images = _images()
    ours = clip_score(images, PROMPTS, embedder, reduction="none")

    class TensorFeatures(torch.nn.Module):
        """transformers 5 returns output objects; torchmetrics wants tensors (OFFLINE.md)."""

        def __init__(self, model):
            super().__init__()
            self.model, self.config = model, model.config

        def get_image_features(self, *args, **kwargs):
            return self.model.get_image_features(*args, **kwargs).pooler_output

        def get_text_features(self, *args, **kwargs):
            return self.model.get_text_features(*args, **kwargs).pooler_output

    model = TensorFeatures(CLIPModel.from_pretrained(hf_clip_dir).eval())
    processor = CLIPProcessor.from_pretrained(hf_clip_dir)
    for i, prompt in enumerate(
        PROMPTS
    ):  # per image: torchmetrics clamps the batch mean, not each score
        expected = tm_clip_score(images[i] * 255, prompt, lambda: (model, processor))
        torch.testing.assert_close(ours[i].float(), expected.float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(clip_score(images, PROMPTS, embedder), ours.mean())


def test_pick_score_is_temperature_times_cosine(hf_clip_dir):
    embedder = load_hf_clip(str(hf_clip_dir))
    images = _images()
    image = torch.nn.functional.normalize(embedder.embed_images(images), dim=1)
    text = torch.nn.functional.normalize(embedder.embed_texts(PROMPTS), dim=1)
    expected = embedder.logit_scale * (image * text).sum(1)
    got = pick_score(images, PROMPTS, embedder, reduction="none")
    torch.testing.assert_close(got.float(), expected, rtol=1e-5, atol=1e-5)


def test_load_clip_from_local_dir_loads_the_saved_weights(tiny_open_clip_dir):
    embedder = load_clip(f"local-dir:{tiny_open_clip_dir}", None)
    saved = torch.load(tiny_open_clip_dir / "open_clip_pytorch_model.bin", weights_only=True)
    for name, param in embedder.model.state_dict().items():
        torch.testing.assert_close(param, saved[name])
    assert not embedder.model.training
    assert not any(p.requires_grad for p in embedder.model.parameters())


def test_open_clip_embedder_preprocessing_matches_open_clip_transform(tiny_open_clip_dir):
    import open_clip
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_open_clip_dir}")
    embedder = load_clip(f"local-dir:{tiny_open_clip_dir}", None)
    # Values on the uint8 grid and the model's own size: PIL and tensor paths agree exactly.
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0)) / 255
    pil = [Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()) for im in images]
    with torch.no_grad():
        expected = model.eval().encode_image(torch.stack([preprocess(p) for p in pil]))
    torch.testing.assert_close(embedder.embed_images(images), expected, rtol=1e-4, atol=1e-5)
    # Other sizes: our antialiased tensor resize + centre crop is close to PIL's bicubic one.
    big = torch.nn.functional.interpolate(images, size=(48, 64), mode="bilinear")
    pil_big = [Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()) for im in big]
    expected = torch.stack([preprocess(p) for p in pil_big])
    cfg = embedder.model.visual.preprocess_cfg
    mean, std = (torch.tensor(cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    ours = (resize_and_crop(big, (32, 32)) - mean) / std
    assert ours.shape == expected.shape
    assert (ours - expected).abs().mean() < 0.05  # normalised units (std ~0.25): ~1% of range


def test_open_clip_score_matches_direct_cosine(tiny_open_clip_dir):
    embedder = load_clip(f"local-dir:{tiny_open_clip_dir}", None)
    images = _images(2, size=32)
    image = embedder.embed_images(images)
    text = embedder.embed_texts(["a photo"])
    cosine = torch.nn.functional.cosine_similarity(image, text.expand(2, -1))
    expected = 100 * cosine.clamp_min(0)
    got = clip_score(images, "a photo", embedder, reduction="none")
    torch.testing.assert_close(got.float(), expected, rtol=1e-5, atol=1e-4)


def test_clip_score_from_features_known_values_and_errors():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    text = torch.tensor([[2.0, 0.0]])
    got = clip_score_from_features(image, text, reduction="none")
    torch.testing.assert_close(got, torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="pair up"):
        clip_score_from_features(image, torch.ones(2, 2))
    with pytest.raises(ValueError, match="prompts"):
        clip_score(_images(3), ["a", "b"], object())


def test_open_clip_loader_errors_are_clear(monkeypatch):
    import open_clip.factory

    with pytest.raises(ValueError, match="unknown open_clip model"):
        load_clip("ViT-Nope-99", "openai")
    with pytest.raises(ValueError, match="neither a pretrained tag"):
        load_clip("ViT-B-32", "no-such-tag")

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(MissingWeightsError, match="ViT-B-32"):
        load_clip("ViT-B-32", "openai")


def test_dino_embedder_loads_local_folder_and_random_weights_only_on_request(tmp_path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(2)
    Dinov2Model(config).save_pretrained(tmp_path)
    BitImageProcessor(
        size={"shortest_edge": 36},
        crop_size={"height": 32, "width": 32},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(tmp_path)
    loaded = load_dino(str(tmp_path))
    random = load_dino(str(tmp_path), random_weights=True)
    images = _images(2)
    a, b = loaded.embed_images(images), random.embed_images(images)
    assert a.shape == b.shape == (2, 32)
    assert not torch.allclose(a, b)  # the saved weights were loaded, not a fresh init
    torch.testing.assert_close(loaded.embed_images(images), a)
    with pytest.raises(MissingWeightsError, match="hf download"):
        load_dino(str(tmp_path / "not-there"))
