"""Stage evaluate@<label model>: the paper's Figs. 4 and 5 (§3.1) and the metrics JSON; sample
metrics are mean ± std over ``sample_seeds`` sample sets, beside the real-vs-real floor."""

from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.atomic import write_json
from pipeline.checkpoint import load_model
from pipeline.config import load_params
from pipeline.data.fmnist import LABELS, label_index, load_tensors
from pipeline.evaluate import (
    importance_weighted_nll,
    judge_outputs,
    negative_elbo,
    per_class_accuracy,
    real_vs_real_frechet,
    sample_images,
    seeded_sample_scores,
)
from pipeline.figures import image_grid, save_png
from pipeline.finite import require_finite
from pipeline.models.judge import JudgeCNN
from pipeline.models.registry import model_spec
from pipeline.runtime import make_deterministic, resolve_device
from stages.layout import METRICS, RAW_FMNIST, REPORTS, model_dir

FIG5_LABELS = ["sneaker", "boot", "top", "handbag"]  # the paper's §3.1.2 rows


def _images(x: torch.Tensor):
    return x.reshape(-1, 28, 28).cpu().numpy()


def run(name: str, params_path: Path) -> None:
    p = model_spec(name).evaluate_params(load_params(params_path))
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    model, _ = load_model(model_dir(name), device)
    judge, _ = load_model(model_dir("judge"), device, expect=JudgeCNN)
    x_test, y_test = load_tensors(RAW_FMNIST, "test", p.test_limit, device)
    c_test = F.one_hot(y_test, 10).float()

    elbo = negative_elbo(model, x_test, c_test, p.batch_size)
    iw_nll = importance_weighted_nll(model, x_test, c_test, p.iw_k, p.batch_size)
    real_predicted, real_features = judge_outputs(judge, x_test, p.batch_size)
    intended = torch.arange(10).repeat_interleave(p.samples_per_class).to(device)
    seeds = [p.seed + i for i in range(p.sample_seeds)]
    accuracy, frechet = seeded_sample_scores(
        model,
        judge,
        F.one_hot(intended, 10).float(),
        intended,
        real_features,
        LABELS,
        seeds,
        p.temperature,
        p.batch_size,
    )
    metrics = {
        "test_nelbo_nats": elbo["nelbo"],
        "test_recon_nats": elbo["recon"],
        "test_kl_nats": elbo["kl"],
        "test_iw_nll_nats": iw_nll,
        "judge_accuracy_on_samples": accuracy,
        "frechet_judge_features": frechet,
        # Two disjoint halves of the real test set: the distance a perfect generator reaches.
        "frechet_real_vs_real": real_vs_real_frechet(real_features, seeds),
        # What the judge scores on real test images: the ceiling for the sample accuracy.
        "judge_accuracy_on_real_test": float((real_predicted == y_test.cpu()).float().mean()),
        "judge_accuracy_on_real_test_per_class": per_class_accuracy(real_predicted, y_test, LABELS),
        "conditions": {
            "test_images": len(x_test),
            "iw_k": p.iw_k,
            "samples_per_class": p.samples_per_class,
            "sample_seeds": p.sample_seeds,
            "temperature": p.temperature,
            "features": "judge penultimate layer (128-d)",
        },
    }
    path = METRICS / name / "eval.json"
    write_json(path, require_finite(metrics, str(path)))

    reports = REPORTS / name
    n = p.grid_columns
    # Fig. 4: originals above reconstructions decoded from the posterior mean.
    with torch.no_grad():
        mu, _ = model.encode(x_test[:n], c_test[:n])
        recon = model.decode(mu, c_test[:n])
    save_png(
        image_grid([_images(x_test[:n]), _images(recon)], ["original", "reconstructed"]),
        reports / "fig4_reconstructions.png",
    )
    # Fig. 5: rows of samples for the paper's labels, then every class.
    save_png(
        _class_rows(model, [label_index(w) for w in FIG5_LABELS], n, generator, p.temperature),
        reports / "fig5_generated.png",
    )
    save_png(
        _class_rows(model, list(range(10)), n, generator, p.temperature),
        reports / "fig5_all_classes.png",
    )


def _class_rows(model, classes: list[int], n: int, generator, temperature: float):
    rows, device = [], next(model.parameters()).device
    for c in classes:
        condition = F.one_hot(torch.full((n,), c), 10).float().to(device)
        rows.append(_images(sample_images(model, condition, generator, temperature)))
    return image_grid(rows, [LABELS[c] for c in classes])
