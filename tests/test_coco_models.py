"""The COCO CVAEs of §2.2 and §2.3 and the fusion module: shapes, fusion kinds, learning."""

import pytest
import torch

from pipeline.checkpoint import load_model, save_model
from pipeline.models.cvae_clip import CVAEClip
from pipeline.models.cvae_gated import CVAEGated
from pipeline.models.fusion import Fusion

KINDS = ["concat", "add", "gated"]


@pytest.mark.parametrize("kind", KINDS)
def test_fusion_shapes_and_gate_bounds(kind):
    fusion = Fusion(kind, latent_dim=8, text_dim=12)
    out = fusion(torch.randn(5, 8), torch.randn(5, 12))
    assert out.shape == (5, fusion.out_dim) == (5, 20 if kind == "concat" else 8)


def test_gated_fusion_is_a_convex_mix_of_its_inputs():
    fusion = Fusion("gated", latent_dim=4, text_dim=4)  # same sizes: no projection
    z, t = torch.zeros(3, 4), torch.ones(3, 4)
    out = fusion(z, t)
    assert ((out > 0) & (out < 1)).all()  # g*0 + (1-g)*1 with g in (0, 1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("size", "width"), [(32, 8), (224, 64)])
def test_clip_cvae_shapes(kind, size, width):
    model = CVAEClip.of(
        image_size=size,
        text_dim=512,
        latent_dim=128,
        width=width,
        fusion=kind,
        feature_norm=True,
        logvar_bound=8.0,
    ).eval()
    x, c = torch.rand(2, 3, size, size), torch.randn(2, 512)
    with torch.no_grad():
        logits, mu, logvar = model(x, c)
        assert model.image_encoder(x).shape == (2, 8 * width, size // 16, size // 16)  # 14x14x512
    assert logits.shape == (2, 3, size, size) and mu.shape == logvar.shape == (2, 128)
    if kind == "concat":
        assert model.decoder_fc.in_features == 640  # [z 128, caption 512], as in §2.2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [32, 224])
def test_gated_cvae_shapes(kind, size):
    model = CVAEGated.of(
        image_size=size, text_dim=512, latent_dim=128, fusion=kind, beta=1.0, logvar_bound=8.0
    ).eval()
    x, c = torch.rand(2, 3, size, size), torch.randn(2, 512)
    with torch.no_grad():
        out, mu, _ = model(x, c)
        images = model.decode(torch.randn(2, 128), c)
    assert out.shape == (2, 3, size, size) and mu.shape == (2, 128)
    assert out.min() >= -1 and out.max() <= 1  # tanh
    assert images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("cls", [CVAEClip, CVAEGated])
def test_overfits_a_few_images(cls):
    torch.manual_seed(0)
    kwargs = (
        {"width": 8, "fusion": "concat", "feature_norm": True, "logvar_bound": 8.0}
        if cls is CVAEClip
        else {"fusion": "gated", "beta": 1.0, "logvar_bound": 8.0}
    )
    model = cls.of(image_size=32, text_dim=16, latent_dim=8, **kwargs)
    x = torch.zeros(4, 3, 32, 32)  # four crisp patterns: one half of the image lit each
    x[0, :, :16], x[1, :, 16:], x[2, :, :, :16], x[3, :, :, 16:] = 1, 1, 1, 1
    c = torch.randn(4, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        terms = model.batch_losses(x, c)
        optimizer.zero_grad()
        (terms["loss"] / len(x)).backward()
        optimizer.step()
        losses.append(float(terms["recon"].detach()))
    assert losses[-1] < losses[0] / 3


@pytest.mark.parametrize(
    "model",
    [
        CVAEClip.of(
            image_size=32,
            text_dim=16,
            latent_dim=8,
            width=8,
            fusion="add",
            feature_norm=True,
            logvar_bound=8.0,
        ),
        CVAEGated.of(
            image_size=32, text_dim=16, latent_dim=8, fusion="concat", beta=0.5, logvar_bound=8.0
        ),
    ],
)
def test_coco_models_save_and_load(tmp_path, model):
    key = "cvae_clip" if isinstance(model, CVAEClip) else "cvae_gated"
    meta = {"name": f"coco_{key}", "class": key, "data": "coco", "image_shape": [3, 32, 32]}
    meta |= {"conditioning": "t5-small", "cond_null_p": 0.0, "encoder_weights": "t5"}
    meta["encoder_sha256"] = "ab" * 32
    save_model(tmp_path, model, meta)
    loaded, config = load_model(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert config == {**meta, "model": key, **model.config.model_dump()}
