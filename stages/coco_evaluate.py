"""Stage evaluate@coco_clip and evaluate@coco_t5 (coco/dvc.yaml): figures 6-10 and metrics.

Fig. 6   decoder alone (z ~ N(0, I)) for the paper's five captions
Fig. 7   held-out images: originals / reconstructions (image + caption) / caption only
Fig. 8   captions not seen in training (evaluate.<model>.unseen_captions)
Figs. 9, 10   samples for the epoch captions at each kept epoch (train.<model>.keep_epochs)

metrics/<model>/eval.json: reconstruction MSE / PSNR / SSIM and the test loss of held-out
images, and for caption-only samples of the same images' captions FID, KID and CLIP score
(pipeline/sample_quality.py), each with its conditions, or absent with the reason.
"""

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from pipeline.atomic import write_json
from pipeline.checkpoint import load_model
from pipeline.config import load_params
from pipeline.data.embeddings import caption_lookup
from pipeline.data.pairs import decode_jpeg
from pipeline.data.shards import read_samples
from pipeline.encoders import load_encoder
from pipeline.errors import PipelineError
from pipeline.evaluate import sample_images
from pipeline.figures import image_grid, save_png
from pipeline.finite import require_finite, require_finite_tensor
from pipeline.image_metrics import reconstruction_metrics
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.sample_quality import score_caption_only
from stages.layout import COCO_SHARDS, METRICS, REPORTS, embeddings_dir, epochs_dir, model_dir
from stages.train_coco import ENCODER


def _held_out(
    subset: str, encoder: str, limit: int
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Up to ``limit`` held-out images (N, 3, S, S) in [0, 1], their first caption's vector
    and its text."""
    row_of, vectors = caption_lookup(embeddings_dir(encoder, "coco"))
    images, rows, texts = [], [], []
    for sample in read_samples(sorted(COCO_SHARDS.glob(f"{subset}-*.tar"))):
        meta = sample["json"]
        found = [(int(i), t) for i, t in zip(meta["caption_ids"], meta["captions"], strict=True)
                 if int(i) in row_of]  # fmt: skip
        if not found:
            continue
        images.append(decode_jpeg(sample["jpg"]).float() / 255)
        rows.append(row_of[found[0][0]])
        texts.append(found[0][1])
        if len(images) == limit:
            break
    if not images:
        raise PipelineError(
            f"evaluate: no held-out images with embedded captions in {COCO_SHARDS}/{subset}-*.tar "
            "(check evaluate.<model>.eval_subset and the embed stage)"
        )
    return torch.stack(images), vectors[rows], texts


def _hwc(images: torch.Tensor) -> np.ndarray:
    return images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def run(name: str, params_path: Path) -> None:
    params = load_params(params_path)
    p = params.evaluate.coco_clip if name == "coco_clip" else params.evaluate.coco_t5
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    model, config = load_model(model_dir(name), device)
    encoder = load_encoder(ENCODER[name], params.embed.encoder(ENCODER[name]), device)
    x, c, texts = _held_out(p.eval_subset, ENCODER[name], p.metric_images)
    x, c = x.to(device), c.to(device)
    scale = max(1, 64 // config["image_size"])

    with torch.no_grad():
        recon, loss_terms, count = [], {}, 0
        for start in range(0, len(x), p.batch_size):
            xb, cb = x[start : start + p.batch_size], c[start : start + p.batch_size]
            mu, _ = model.encode(xb, cb)
            recon.append(model.decode(mu, cb))
            for key, value in model.batch_losses(xb, cb).items():
                loss_terms[key] = loss_terms.get(key, 0.0) + float(value)
            count += len(xb)
        recon = require_finite_tensor(torch.cat(recon), f"evaluate {name}: reconstructions")
        metric_generator = torch.Generator().manual_seed(p.seed + 1)  # independent of figures
        only_caption = torch.cat([sample_images(model, c[i : i + p.batch_size], metric_generator)
                                  for i in range(0, len(c), p.batch_size)])  # fmt: skip
        require_finite_tensor(only_caption, f"evaluate {name}: caption-only samples")
    metrics = {
        "reconstruction": reconstruction_metrics(x, recon),
        "test_loss_per_image": {k: v / count for k, v in loss_terms.items()},
        "conditions": {
            "images": count,
            "image_size": config["image_size"],
            "subset": p.eval_subset,
            "encoder": ENCODER[name],
            "reconstruction": "decoder(posterior mean, caption)",
        },  # fmt: skip
    }
    if name == "coco_clip":  # BCE + KL is the Bernoulli decoder's negative ELBO
        metrics["test_nelbo_nats"] = metrics["test_loss_per_image"]["loss"]
    metrics["caption_only"] = score_caption_only(
        p, f"evaluate.{name}", x, only_caption, texts, device, config["image_size"]
    )
    path = METRICS / name / "eval.json"
    write_json(path, require_finite(metrics, str(path), allow_inf=("psnr_db",)))

    out = REPORTS / name

    def caption_rows(captions: list[str], weights: dict | None = None) -> list[np.ndarray]:
        if weights is not None:
            model.load_state_dict(weights)
        vectors = torch.from_numpy(encoder.encode(captions)).to(device)
        return [_hwc(sample_images(model, v.expand(p.samples, -1), generator)) for v in vectors]

    save_png(image_grid(caption_rows(p.captions), [t[:40] for t in p.captions],
                        scale=scale, label_width=260), out / "fig6_captions.png")  # fmt: skip
    n = min(p.figure_images, len(x))
    only_text = sample_images(model, c[:n], generator)
    save_png(image_grid([_hwc(x[:n]), _hwc(recon[:n]), _hwc(only_text)],
                        ["original", "image + caption", "caption only"], scale=scale,
                        label_width=110), out / "fig7_heldout.png")  # fmt: skip
    save_png(image_grid(caption_rows(p.unseen_captions), [t[:40] for t in p.unseen_captions],
                        scale=scale, label_width=260), out / "fig8_unseen.png")  # fmt: skip
    rows = caption_rows(p.epoch_captions)  # the final weights first, then each kept epoch
    labels = [f"final: {t[:30]}" for t in p.epoch_captions]
    for path in sorted(epochs_dir(name).glob("epoch-*.safetensors")):
        weights = {k: v.to(device) for k, v in load_file(str(path)).items()}
        rows += caption_rows(p.epoch_captions, weights)
        labels += [f"ep {int(path.stem[6:])}: {t[:30]}" for t in p.epoch_captions]
    save_png(image_grid(rows, labels, scale=scale, label_width=260), out / "fig9_10_epochs.png")
