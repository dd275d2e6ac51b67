"""Stage evaluate_text@fmnist_text: samples for phrasings seen and never seen in training.

The judge scores samples generated from each phrasing of captions/fmnist.json: the share it
assigns to the phrasing's class, and the Fréchet distance of their judge features to the real
test images, for the held-out, validation and training phrasings (mean ± std over
``sample_seeds`` sample sets). The figure shows one held-out
phrasing per class.
"""

from pathlib import Path

import torch

from pipeline.atomic import write_json
from pipeline.checkpoint import load_model, require_encoder_weights
from pipeline.config import load_params
from pipeline.data.captions import fmnist_caption_set
from pipeline.data.embeddings import caption_lookup, encoder_identity
from pipeline.data.fmnist import LABELS, load_tensors
from pipeline.evaluate import judge_outputs, sample_images, seeded_sample_scores
from pipeline.figures import image_grid, save_png
from pipeline.finite import require_finite
from pipeline.models.judge import JudgeCNN
from pipeline.models.registry import model_spec
from pipeline.runtime import make_deterministic, resolve_device
from stages.layout import METRICS, RAW_FMNIST, REPORTS, embeddings_dir, model_dir


def run(name: str, params_path: Path) -> None:
    p = model_spec(name).evaluate_params(load_params(params_path))
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    model, config = load_model(model_dir(name), device)
    judge, _ = load_model(model_dir("judge"), device, expect=JudgeCNN)
    folder = embeddings_dir(config["encoder"], "fmnist")
    require_encoder_weights(config, model_dir(name), encoder_identity(folder))
    row_of, vectors = caption_lookup(folder)
    vectors = vectors.to(device)
    caption_set = fmnist_caption_set()
    x_test, _ = load_tensors(RAW_FMNIST, "test", p.test_limit, device)
    _, real_features = judge_outputs(judge, x_test, p.batch_size)

    metrics = {
        "conditions": {
            "encoder": config["encoder"],
            "test_images": len(x_test),
            "samples_per_caption": p.samples_per_caption,
            "sample_seeds": p.sample_seeds,
            "temperature": p.temperature,
            "features": "judge penultimate layer (128-d)",
        }
    }
    seeds = [p.seed + i for i in range(p.sample_seeds)]
    for split in ("heldout", "val", "train"):  # val chooses settings; heldout only reports
        rows = caption_set[split]
        index = torch.tensor([row_of[r["caption_id"]] for r in rows])
        intended = torch.tensor([r["image_id"] for r in rows])
        index, intended = (t.repeat_interleave(p.samples_per_caption) for t in (index, intended))
        accuracy, frechet = seeded_sample_scores(
            model,
            judge,
            vectors[index.to(device)],
            intended,
            real_features,
            LABELS,
            seeds,
            p.temperature,
            p.batch_size,
        )
        metrics[f"judge_accuracy_{split}_phrasings"] = accuracy
        metrics[f"frechet_judge_features_{split}_phrasings"] = frechet
    path = METRICS / name / "eval.json"
    write_json(path, require_finite(metrics, str(path)))

    # One row per class: samples for its first held-out phrasing, labelled with the text.
    first = {}
    for r in caption_set["heldout"]:
        first.setdefault(r["image_id"], r)
    rows, labels = [], []
    for label in sorted(first):
        condition = vectors[row_of[first[label]["caption_id"]]].expand(p.grid_columns, -1)
        samples = sample_images(model, condition, generator, p.temperature)
        rows.append(samples.reshape(-1, 28, 28).cpu().numpy())
        labels.append(first[label]["caption"][:30])
    save_png(image_grid(rows, labels, label_width=150), REPORTS / name / "heldout_phrasings.png")
