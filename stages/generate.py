"""`t2i generate`: a PNG grid of images from any trained model of the registry.

A label-conditioned model takes --label ('sneaker'); a text-conditioned one takes any
--caption, embedded with the encoder the model was trained on (its weights as params.yaml's
embed section names them). Fashion-MNIST models draw grey 28x28 tiles, COCO models RGB tiles
at their packed size (224 by default).
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.checkpoint import load_model, require_encoder_weights
from pipeline.config import load_params
from pipeline.data.fmnist import label_index
from pipeline.encoders import load_encoder
from pipeline.errors import PipelineError
from pipeline.evaluate import hwc, sample_images
from pipeline.figures import image_grid
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
):
    model, config = load_model(model_path)
    spec = model_spec(config["name"])
    if spec.conditioning == "text":
        if caption is None:
            raise PipelineError(f"{model_path} is conditioned on text: give --caption '...'")
        spec_params = load_params(params_path).embed.encoder(config["encoder"])
        encoder = load_encoder(config["encoder"], spec_params, torch.device("cpu"))
        require_encoder_weights(config, model_path, encoder.info)
        condition = torch.from_numpy(encoder.encode([caption])).expand(n, -1)
    elif spec.conditioning == "label":
        if label is None:
            raise PipelineError(f"{model_path} is conditioned on labels: give --label")
        condition = F.one_hot(torch.full((n,), label_index(label)), config["cond_dim"]).float()
    else:
        raise PipelineError(f"{model_path}: {spec.name} is a classifier, it generates nothing")
    images = sample_images(model, condition, torch.Generator().manual_seed(seed))
    tiles = image_tiles(images, spec.image_shape(config), str(model_path))
    scale = max(1, 64 // tiles.shape[1])  # 28 -> 2x, as the figures; 224 stays 1x
    return image_grid([tiles[i : i + columns] for i in range(0, n, columns)], scale=scale)
