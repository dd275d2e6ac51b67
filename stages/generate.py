"""`t2i generate`: a PNG grid from a trained Fashion-MNIST model, for a label or a caption."""

from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.checkpoint import load_model
from pipeline.config import load_params
from pipeline.data.fmnist import label_index
from pipeline.encoders import load_encoder
from pipeline.errors import PipelineError
from pipeline.evaluate import sample_images
from pipeline.figures import image_grid


def grid(model_path: Path, label: str | None, caption: str | None, n: int, columns: int,
         seed: int, params_path: Path):  # fmt: skip
    """fmnist_label takes a label ('sneaker'); fmnist_text takes any caption, embedded with
    the encoder it was trained on (its weights as params.yaml's embed section names them)."""
    model, config = load_model(model_path)
    encoder_name = config.get("encoder")
    if encoder_name:
        if caption is None:
            raise PipelineError(f"{model_path} is conditioned on text: give --caption '...'")
        spec = load_params(params_path).embed.encoder(encoder_name)
        encoder = load_encoder(encoder_name, spec, torch.device("cpu"))
        condition = torch.from_numpy(encoder.encode([caption])).expand(n, -1)
    else:
        if label is None:
            raise PipelineError(f"{model_path} is conditioned on labels: give --label")
        condition = F.one_hot(torch.full((n,), label_index(label)), config["cond_dim"]).float()
    images = sample_images(model, condition, torch.Generator().manual_seed(seed))
    images = images.reshape(-1, 28, 28).numpy()
    return image_grid([images[i : i + columns] for i in range(0, n, columns)])
