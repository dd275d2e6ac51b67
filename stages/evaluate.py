"""Stage evaluate@<label model>: Figs. 4 and 5 (§3.1), eval.json and the frontier over
(sampler, w, T) (pipeline/frontier.py), at the point chosen on validation images."""

from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.checkpoint import load_model, read_config
from pipeline.config import load_params
from pipeline.data.fmnist import LABELS, load_tensors
from pipeline.evaluate import (
    Judging,
    importance_weighted_nll,
    judge_outputs,
    negative_elbo,
    per_class_accuracy,
    real_vs_real_frechet,
)
from pipeline.fmnist_figures import Sampling, label_figures
from pipeline.frontier import (
    VAL_SEED_OFFSET,
    FrontierScorer,
    class_spread,
    guided_frontier,
    sampler_density,
    validation_setup,
)
from pipeline.metrics import LabelEval
from pipeline.models.judge import JudgeCNN
from pipeline.runtime import make_deterministic, resolve_device
from stages import publish
from stages.layout import RAW_FMNIST, REPORTS, model_dir


def run(name: str, params_path: Path) -> None:
    params = load_params(params_path)
    with publish.evaluating(name):
        _evaluate(name, params.model(name).evaluate, params)


def _evaluate(name: str, p, params) -> None:
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    model, _ = load_model(model_dir(name), device)
    meta = read_config(model_dir(name) / "config.json").meta
    dropout = meta.can_guide  # the model says whether it can be guided
    density = sampler_density(model_dir(name), meta, model, [*p.sampler_sweep, p.sampler])
    judge, _ = load_model(model_dir("judge"), device, expect=JudgeCNN)
    x_test, y_test = load_tensors(RAW_FMNIST, "test", p.test_limit, device)
    c_test = F.one_hot(y_test, 10).float()

    elbo = negative_elbo(model, x_test, c_test, p.batch_size)
    iw_nll = importance_weighted_nll(model, x_test, c_test, p.iw_k, p.batch_size)
    real_predicted, real_features = judge_outputs(judge, x_test, p.batch_size)
    val_features, val_labels, val_cas = validation_setup(RAW_FMNIST, p, judge, params, device)
    intended = torch.arange(10).repeat_interleave(p.samples_per_class).to(device)
    seeds = [p.seed + i for i in range(p.sample_seeds)]
    common = (model, F.one_hot(intended, 10).float(), intended)
    val_judging = Judging(judge, val_features, LABELS, p.batch_size)
    val_seeds = [s + VAL_SEED_OFFSET for s in seeds]
    val = FrontierScorer(*common, val_judging, val_seeds, density, val_cas)
    test_judging = Judging(judge, real_features, LABELS, p.batch_size)
    test = FrontierScorer(*common, test_judging, seeds, density)
    spreads = {
        "validation": class_spread(val_features, val_labels),
        "test": class_spread(real_features, y_test),
    }
    (sampler, w, t), point, guidance, frontier = guided_frontier(p, val, test, dropout, spreads)
    metrics = {
        "test_nelbo_nats": elbo["nelbo"],
        "test_recon_nats": elbo["recon"],
        "test_kl_nats": elbo["kl"],
        "test_iw_nll_nats": iw_nll,
        "judge_accuracy_on_samples": point["accuracy"],
        "frechet_judge_features": point["frechet"],
        "within_class_spread": point["spread"],
        "within_class_spread_real_test": spreads["test"],
        # Two disjoint halves of the real test set: the distance a perfect generator reaches.
        "frechet_real_vs_real": real_vs_real_frechet(real_features, seeds),
        # What the judge scores on real test images: the ceiling for the sample accuracy.
        "judge_accuracy_on_real_test": float((real_predicted == y_test.cpu()).float().mean()),
        "judge_accuracy_on_real_test_per_class": per_class_accuracy(real_predicted, y_test, LABELS),
        **guidance,
        "conditions": {
            "test_images": len(x_test),
            "iw_k": p.iw_k,
            "samples_per_class": p.samples_per_class,
            "sample_seeds": p.sample_seeds,
            "temperature": t,
            "sampler": sampler,
            "guidance": w,
            "validation_images": f"the last {p.val_images} training images",
            "features": "judge penultimate layer (128-d)",
        },
    }
    files = publish.checked(name, metrics, frontier, LabelEval)
    sampling = Sampling(t, w, density if sampler == "expost" else None)
    label_figures(model, x_test, c_test, p.grid_columns, generator, sampling, REPORTS / name)
    publish.write(name, files)  # metrics last: a failed stage leaves none
