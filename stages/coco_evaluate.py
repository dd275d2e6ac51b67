"""Stage evaluate@coco_clip and evaluate@coco_t5 (coco/dvc.yaml): figures 6-10 and metrics.

Fig. 6   decoder alone (z ~ N(0, I)) for the paper's five captions
Fig. 7   held-out images: originals / reconstructions (image + caption) / caption only
Fig. 8   captions not seen in training (models.<name>.evaluate.unseen_captions)
Figs. 9, 10   samples for the epoch captions at each kept epoch (models.<name>.train.keep_epochs)

metrics/<model>/eval.json: reconstruction MSE / PSNR / SSIM and the test loss of held-out
images, and for caption-only samples of the same images' captions FID, KID, CLIP-S,
CLIPScore and CLIP-R-precision (pipeline/sample_quality.py, clip_metrics.py), each with its
conditions, or absent with the reason. Held-out images stream through in batches
(pipeline/heldout.py): metric_images 30000 (FID-30K) needs no more memory than 500. Captions
are embedded with the encoder the model was trained on (its config.json).
"""

from pathlib import Path

import torch

from pipeline.checkpoint import load_model, require_encoder_weights, verified_kept_epochs
from pipeline.coco_figures import coco_figures
from pipeline.config import load_params
from pipeline.data.pairs import ShardCaptionPairs
from pipeline.encoders import load_encoder
from pipeline.errors import PipelineError
from pipeline.finite import require_finite
from pipeline.heldout import evaluate_held_out
from pipeline.lock import model_lock
from pipeline.metrics import CocoEval, validate_metrics, write_metrics
from pipeline.models.bernoulli import BernoulliCVAE
from pipeline.runtime import make_deterministic, resolve_device
from stages.layout import COCO_SHARDS, METRICS, REPORTS, embeddings_dir, epochs_dir, model_dir


def run(name: str, params_path: Path) -> None:
    params = load_params(params_path)
    entry = params.model(name)
    with model_lock(model_dir(name), f"t2i evaluate {name}"):
        (METRICS / name / "eval.json").unlink(missing_ok=True)  # a failed run leaves none
        _evaluate(name, entry, params.embed)


def _evaluate(name: str, entry, embed) -> None:
    p, keep = entry.evaluate, entry.train.keep_epochs  # exactly these, as training wrote them
    kept = verified_kept_epochs(epochs_dir(name), keep, f"models.{name}.train.keep_epochs")
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    model, config = load_model(model_dir(name), device)
    encoder_name, size = config["conditioning"], config["image_size"]
    if p.guidance > 0 and config["cond_null_p"] == 0:
        raise PipelineError(
            f"models.{name}.evaluate.guidance {p.guidance:g}: {model_dir(name)} was trained "
            "without the null condition (cond_null_p 0), so it cannot be guided; set it to 0"
        )
    encoder = load_encoder(encoder_name, embed.encoder(encoder_name), device)
    require_encoder_weights(config, model_dir(name), encoder.info)
    held_out = ShardCaptionPairs(
        sorted(COCO_SHARDS.glob(f"{p.eval_subset}-*.tar")),
        embeddings_dir(encoder_name, "coco"),
        pairs=0,
        batch_size=p.batch_size,
    ).first_caption_batches(p.metric_images, p.batch_size)
    metric_generator = torch.Generator().manual_seed(p.seed + 1)  # independent of figures
    scored = evaluate_held_out(model, held_out, p, name, device, metric_generator)
    nelbo = isinstance(model, BernoulliCVAE)  # its loss is the negative ELBO in nats
    metrics = scored.metrics(p.eval_subset, size, encoder_name, nelbo=nelbo)
    metrics["conditions"]["caption_only"] = {"guidance": p.guidance, "temperature": p.temperature}
    path = METRICS / name / "eval.json"
    require_finite(metrics, str(path), allow_inf=("psnr_db",))  # written last, below
    ev = validate_metrics(metrics, str(path), CocoEval, "nothing written")
    coco_figures(model, encoder, p, scored.first, kept, generator, REPORTS / name)
    write_metrics(path, ev)  # last: a stage that fails before here leaves no metric
