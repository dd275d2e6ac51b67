"""Stage evaluate@fmnist_label: the paper's Figs. 4 and 5 (§3.1) and the metrics JSON."""

from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.atomic import write_json
from pipeline.checkpoint import load_model
from pipeline.config import load_params
from pipeline.data.fmnist import LABELS, label_index, load_tensors
from pipeline.evaluate import (
    conditional_accuracy,
    frechet_distance,
    importance_weighted_nll,
    judge_outputs,
    negative_elbo,
    sample_images,
)
from pipeline.figures import image_grid, save_png
from pipeline.finite import require_finite
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
    judge, _ = load_model(model_dir("judge"), device)
    x_test, y_test = load_tensors(RAW_FMNIST, "test", p.test_limit, device)
    c_test = F.one_hot(y_test, 10).float()

    elbo = negative_elbo(model, x_test, c_test, p.batch_size)
    iw_nll = importance_weighted_nll(model, x_test, c_test, p.iw_k, p.batch_size)
    intended = torch.arange(10).repeat_interleave(p.samples_per_class).to(device)
    samples = sample_images(model, F.one_hot(intended, 10).float(), generator)
    predicted, sample_features = judge_outputs(judge, samples, p.batch_size)
    real_predicted, real_features = judge_outputs(judge, x_test, p.batch_size)
    metrics = {
        "test_nelbo_nats": elbo["nelbo"],
        "test_recon_nats": elbo["recon"],
        "test_kl_nats": elbo["kl"],
        "test_iw_nll_nats": iw_nll,
        "judge_accuracy_on_samples": conditional_accuracy(predicted, intended, LABELS),
        "frechet_judge_features": frechet_distance(sample_features, real_features),
        # What the judge scores on real test images: the ceiling for the sample accuracy.
        "judge_accuracy_on_real_test": float((real_predicted == y_test.cpu()).float().mean()),
        "conditions": {
            "test_images": len(x_test),
            "iw_k": p.iw_k,
            "samples_per_class": p.samples_per_class,
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
        _class_rows(model, [label_index(w) for w in FIG5_LABELS], n, generator, device),
        reports / "fig5_generated.png",
    )
    save_png(
        _class_rows(model, list(range(10)), n, generator, device), reports / "fig5_all_classes.png"
    )


def _class_rows(model, classes: list[int], n: int, generator, device):
    rows = []
    for c in classes:
        condition = F.one_hot(torch.full((n,), c), 10).float().to(device)
        rows.append(_images(sample_images(model, condition, generator)))
    return image_grid(rows, [LABELS[c] for c in classes])
