"""Stage evaluate_text@fmnist_text: samples for phrasings seen and never seen in training.

The judge scores samples generated from each phrasing of captions/fmnist.json: the share it
assigns to the phrasing's class, the Fréchet distance of their judge features to real images
and their within-class spread, for the held-out, validation and training phrasings (mean ±
std over ``sample_seeds`` sample sets). Guidance w is chosen on the validation phrasings
(against the last ``val_images`` training images); the held-out phrasings, against the test
images, draw the frontier (pipeline/frontier.py). The figure shows one held-out phrasing per
class.
"""

from pathlib import Path

import torch

from pipeline.checkpoint import load_model, require_encoder_weights
from pipeline.config import load_params
from pipeline.data.captions import fmnist_caption_set
from pipeline.data.embeddings import caption_lookup, encoder_identity
from pipeline.data.fmnist import LABELS, load_tensors
from pipeline.evaluate import Judging, judge_outputs, sample_images
from pipeline.figures import image_grid, save_png
from pipeline.frontier import FrontierScorer, class_spread, guided_frontier, validation_setup
from pipeline.metrics import TextEval
from pipeline.models.judge import JudgeCNN
from pipeline.runtime import make_deterministic, resolve_device
from stages import publish
from stages.layout import RAW_FMNIST, REPORTS, embeddings_dir, model_dir


def run(name: str, params_path: Path) -> None:
    params = load_params(params_path)
    p = params.model(name).evaluate
    with publish.evaluating(name):
        _evaluate(name, p, params)


def _evaluate(name: str, p, params) -> None:
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    model, config = load_model(model_dir(name), device)
    dropout = config["cond_null_p"] > 0  # the model says whether it can be guided
    judge, _ = load_model(model_dir("judge"), device, expect=JudgeCNN)
    folder = embeddings_dir(config["conditioning"], "fmnist")
    require_encoder_weights(config, model_dir(name), encoder_identity(folder))
    row_of, vectors = caption_lookup(folder)
    vectors = vectors.to(device)
    caption_set = fmnist_caption_set()
    x_test, y_test = load_tensors(RAW_FMNIST, "test", p.test_limit, device)
    _, test_features = judge_outputs(judge, x_test, p.batch_size)
    val_features, val_labels, val_cas = validation_setup(RAW_FMNIST, p, judge, params, device)
    real = {"heldout": test_features, "val": val_features, "train": test_features}
    seeds = [p.seed + i for i in range(p.sample_seeds)]
    scorers = {}
    for split in ("heldout", "val", "train"):  # val chooses w; heldout and train only report
        rows = caption_set[split]
        index = torch.tensor([row_of[r["caption_id"]] for r in rows])
        intended = torch.tensor([r["image_id"] for r in rows])
        index, intended = (t.repeat_interleave(p.samples_per_caption) for t in (index, intended))
        conditions = vectors[index.to(device)]
        judging = Judging(judge, real[split], LABELS, p.batch_size)
        cas = val_cas if split == "val" else None  # the rule's coverage axis
        scorers[split] = FrontierScorer(model, conditions, intended, judging, seeds, None, cas)
    spreads = {
        "validation": class_spread(val_features, val_labels),
        "test": class_spread(test_features, y_test),
    }
    (_, w, t), _, guidance, frontier = guided_frontier(
        p, scorers["val"], scorers["heldout"], dropout, spreads
    )
    metrics = {**guidance, "within_class_spread_real_test": spreads["test"]}
    for split, scorer in scorers.items():
        point = scorer.point(w, t)
        metrics[f"judge_accuracy_{split}_phrasings"] = point["accuracy"]
        metrics[f"frechet_judge_features_{split}_phrasings"] = point["frechet"]
        metrics[f"within_class_spread_{split}_phrasings"] = point["spread"]
    metrics["conditions"] = {
        "encoder": config["conditioning"],
        "test_images": len(x_test),
        "samples_per_caption": p.samples_per_caption,
        "sample_seeds": p.sample_seeds,
        "temperature": t,
        "sampler": "prior",
        "guidance": w,
        "val_phrasings_compared_with": f"the last {p.val_images} training images",
        "features": "judge penultimate layer (128-d)",
    }
    files = publish.checked(name, metrics, frontier, TextEval)
    first = {}  # one row per class: its first held-out phrasing, labelled with the text
    for r in caption_set["heldout"]:
        first.setdefault(r["image_id"], r)
    rows, labels = [], []
    for label in sorted(first):
        condition = vectors[row_of[first[label]["caption_id"]]].expand(p.grid_columns, -1)
        samples = sample_images(model, condition, generator, t, w)
        rows.append(samples.reshape(-1, 28, 28).cpu().numpy())
        labels.append(first[label]["caption"][:30])
    save_png(image_grid(rows, labels, label_width=150), REPORTS / name / "heldout_phrasings.png")
    publish.write(name, files)  # metrics last: a failed stage leaves none
