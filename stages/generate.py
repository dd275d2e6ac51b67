"""`t2i generate`: a PNG grid of images from any trained model of the registry.

A label-conditioned model takes --label ('sneaker'); a text-conditioned one takes any
--caption, embedded with the encoder the model was trained on (its weights as params.yaml's
embed section names them). Fashion-MNIST models draw grey 28x28 tiles, COCO models RGB tiles
at their packed size (224 by default). --guidance W and --temperature T sample as the
evaluations do (docs/guidance.md); W > 0 needs a model trained with cond_null_p > 0.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.checkpoint import load_model, require_encoder_weights
from pipeline.config import load_params
from pipeline.data.fmnist import label_index
from pipeline.encoders import load_encoder
from pipeline.errors import PipelineError, utf8_text
from pipeline.evaluate import decode_noise, hwc
from pipeline.figures import image_grid, to_pixels
from pipeline.models.registry import model_spec


def image_tiles(images: torch.Tensor, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """Decoder outputs as (N, H, W) grey or (N, H, W, 3) RGB tiles; anything else is an error."""
    channels, height, width = shape
    if channels not in (1, 3) or images[0].numel() != channels * height * width:
        raise PipelineError(
            f"{where}: the decoder gives {tuple(images.shape[1:])} per image, not an image "
            f"t2i generate knows ({channels}x{height}x{width} expected: grey 1x28x28 or RGB 3xSxS)"
        )
    images = images.reshape(len(images), channels, height, width)
    return images[:, 0].numpy() if channels == 1 else hwc(images)


def grid(
    model_path: Path,
    label: str | None,
    caption: str | None,
    n: int,
    columns: int,
    seed: int,
    params_path: Path,
    guidance: float = 0.0,
    temperature: float = 1.0,
):
    params = load_params(params_path)
    if n > params.generate.max_samples:
        raise PipelineError(
            f"-n {n}: more than generate.max_samples = {params.generate.max_samples} images "
            f"in one grid ({params_path}); ask for fewer, or raise generate.max_samples"
        )
    model, config = load_model(model_path)
    spec = model_spec(config["name"])
    if spec.conditioning == "text":
        if caption is None:
            raise PipelineError(f"{model_path} is conditioned on text: give --caption '...'")
        caption = utf8_text(caption, "--caption")
        encoder = load_encoder(
            config["encoder"], params.embed.encoder(config["encoder"]), torch.device("cpu")
        )
        require_encoder_weights(config, model_path, encoder.info)
        condition = torch.from_numpy(encoder.encode([caption]))
    elif spec.conditioning == "label":
        if label is None:
            raise PipelineError(f"{model_path} is conditioned on labels: give --label")
        index = label_index(utf8_text(label, "--label"))
        condition = F.one_hot(torch.tensor([index]), config["cond_dim"]).float()
    else:
        raise PipelineError(f"{model_path}: {spec.name} is a classifier, it generates nothing")
    # All n draws at once (n x latent floats: small), as one batch of n would take them; the
    # images are decoded, and turned into uint8 pixels, generate.batch_size at a time.
    eps = torch.randn(n, model.config.latent_dim, generator=torch.Generator().manual_seed(seed))
    pixels = []
    for start in range(0, n, params.generate.batch_size):
        part = eps[start : start + params.generate.batch_size]
        images = decode_noise(model, condition.expand(len(part), -1), part, temperature, guidance)
        pixels.append(to_pixels(image_tiles(images, spec.image_shape(config), str(model_path))))
    tiles = np.concatenate(pixels)
    scale = max(1, 64 // tiles.shape[1])  # 28 -> 2x, as the figures; 224 stays 1x
    return image_grid([tiles[i : i + columns] for i in range(0, n, columns)], scale=scale)
