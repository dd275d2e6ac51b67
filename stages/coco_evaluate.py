"""Stage evaluate@coco_clip and evaluate@coco_t5 (coco/dvc.yaml): figures 6-10 and metrics.

Fig. 6   decoder alone (z ~ N(0, I)) for the paper's five captions
Fig. 7   held-out images: originals / reconstructions (image + caption) / caption only
Fig. 8   captions not seen in training (evaluate.<model>.unseen_captions)
Figs. 9, 10   samples for the epoch captions at each kept epoch (train.<model>.keep_epochs)

metrics/<model>/eval.json: reconstruction MSE / PSNR / SSIM and the test loss of held-out
images, and for caption-only samples of the same images' captions FID, KID, CLIP-S,
CLIPScore and CLIP-R-precision (pipeline/sample_quality.py, clip_metrics.py), each with its
conditions, or absent with the reason. Held-out images stream through in batches
(pipeline/heldout.py): metric_images 30000 (FID-30K) needs no more memory than 500. Captions
are embedded with the encoder the model was trained on (its config.json).
"""

from pathlib import Path

import torch
from safetensors.torch import load_file

from pipeline.atomic import write_json
from pipeline.checkpoint import load_model, require_encoder_weights
from pipeline.config import load_params
from pipeline.data.pairs import ShardCaptionPairs
from pipeline.encoders import load_encoder
from pipeline.evaluate import caption_sample_rows, hwc, sample_images
from pipeline.figures import image_grid, save_png
from pipeline.finite import require_finite
from pipeline.heldout import evaluate_held_out
from pipeline.models.registry import model_spec
from pipeline.runtime import make_deterministic, resolve_device
from stages.layout import COCO_SHARDS, METRICS, REPORTS, embeddings_dir, epochs_dir, model_dir


def run(name: str, params_path: Path) -> None:
    params = load_params(params_path)
    spec = model_spec(name)
    p = spec.evaluate_params(params)
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    model, config = load_model(model_dir(name), device)
    encoder_name = config["encoder"]
    encoder = load_encoder(encoder_name, params.embed.encoder(encoder_name), device)
    require_encoder_weights(config, model_dir(name), encoder.info)
    held_out = ShardCaptionPairs(
        sorted(COCO_SHARDS.glob(f"{p.eval_subset}-*.tar")),
        embeddings_dir(encoder_name, "coco"),
        pairs=0,
        batch_size=p.batch_size,
    ).first_caption_batches(p.metric_images, p.batch_size)
    metric_generator = torch.Generator().manual_seed(p.seed + 1)  # independent of figures
    scored = evaluate_held_out(
        model,
        held_out,
        p,
        f"evaluate.{name}",
        name,
        device,
        config["image_size"],
        p.figure_images,
        metric_generator,
    )
    losses = scored.test_loss_per_image
    metrics = {
        "reconstruction": scored.reconstruction,
        "test_loss_per_image": losses,
        "conditions": {
            "images": scored.images,
            "image_size": config["image_size"],
            "subset": p.eval_subset,
            "encoder": encoder_name,
            "reconstruction": "decoder(posterior mean, caption)",
        },
    }
    if spec.loss == "bce_kl":  # BCE + KL is the Bernoulli decoder's negative ELBO
        metrics["test_nelbo_nats"] = losses["loss"]
    metrics["caption_only"] = scored.caption_only
    path = METRICS / name / "eval.json"
    write_json(path, require_finite(metrics, str(path), allow_inf=("psnr_db",)))

    out, scale = REPORTS / name, max(1, 64 // config["image_size"])

    def rows(captions: list[str]) -> list:
        vectors = torch.from_numpy(encoder.encode(captions)).to(device)
        return caption_sample_rows(model, vectors, p.samples, generator)

    def grid(rows_: list, labels: list[str], figure: str, label_width: int = 260) -> None:
        image = image_grid(rows_, labels, scale=scale, label_width=label_width)
        save_png(image, out / figure)

    grid(rows(p.captions), [t[:40] for t in p.captions], "fig6_captions.png")
    x, recon, c = scored.first
    only_text = sample_images(model, c, generator)
    grid(
        [hwc(x), hwc(recon), hwc(only_text)],
        ["original", "image + caption", "caption only"],
        "fig7_heldout.png",
        110,
    )
    grid(rows(p.unseen_captions), [t[:40] for t in p.unseen_captions], "fig8_unseen.png")
    epoch_rows = rows(p.epoch_captions)  # the final weights first, then each kept epoch
    labels = [f"final: {t[:30]}" for t in p.epoch_captions]
    for path in sorted(epochs_dir(name).glob("epoch-*.safetensors")):
        model.load_state_dict({k: v.to(device) for k, v in load_file(str(path)).items()})
        epoch_rows += rows(p.epoch_captions)
        labels += [f"ep {int(path.stem[6:])}: {t[:30]}" for t in p.epoch_captions]
    grid(epoch_rows, labels, "fig9_10_epochs.png")
