"""Stages cas@<model>, cas_text@<model> and cas_real: Classification Accuracy Score.

CAS (Ravuri & Vinyals 2019): the judge's architecture trained on generated images only,
``cas.samples_per_class`` per class labelled by the condition they were drawn under, tested on
the real test set. ``cas_real`` trains it the same way on the real training images.

A model's CAS: at w = 0 and at the w its evaluation chose (by the headline recipe, the FitSpec
keys of ``cas``; ``fresh_each_epoch``: a new sample set each epoch), and at every (w, T) of its
frontier by the cheaper recipe of ``cas.frontier``. The run holds the model's lock, clears the
curves it replaces, and publishes them with the CAS file, never before.
"""

from pathlib import Path

from pipeline import cas
from pipeline.checkpoint import load_model, require_encoder_weights
from pipeline.config import load_params
from pipeline.data.embeddings import encoder_identity
from pipeline.data.fmnist import load_tensors
from pipeline.finite import require_finite
from pipeline.frontier import read_chosen_guidance
from pipeline.lock import model_lock
from pipeline.metrics import cas_schema, validate_metrics, write_metrics
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import FitRun, clear_live, publish_live
from stages.fingerprint import training_fingerprint
from stages.layout import METRICS, RAW_FMNIST, embeddings_dir, model_dir, state_file

REAL = "real"  # `t2i cas real`: the classifier trained on real images


def _source(name: str, device) -> cas.SampleSource:
    """The model of ``name`` as a sample source; its conditioning is what its config says."""
    model, config = load_model(model_dir(name), device)
    conditioning = config["conditioning"]
    embeddings = None if conditioning == "label" else embeddings_dir(conditioning, "fmnist")
    if embeddings is not None:  # the weights the model was trained on, or none
        require_encoder_weights(config, model_dir(name), encoder_identity(embeddings))
    return cas.SampleSource(model, conditioning, embeddings, device, name)


def _live(name: str, guidance: float | None) -> Path:
    return METRICS / "cas" / name / ("train" if not guidance else f"train_w{guidance:g}")


def score(name: str, p, judge, test, guidance: float | None, generator, source=None) -> dict:
    """The classifier trained on real images (guidance None) or on samples drawn with w."""
    device = test[0].device
    if guidance is None:
        train = load_tensors(RAW_FMNIST, "train", p.real_limit, device)
        trained_on, tag = "the real training images", name
    else:
        train = cas.cas_training_data(source, p, guidance, generator)
        trained_on, tag = f"samples of {name} only", name + (f"_w{guidance:g}" if guidance else "")
    net, extra = cas.classifier(judge.feature_dim, device), {"guidance": guidance}
    fingerprint = training_fingerprint(f"t2i cas {name}", net, p, None if tag == name else extra)
    run = FitRun(
        f"cas {tag}", generator, fingerprint, state_file(f"cas_{tag}"), _live(name, guidance)
    )
    history = cas.train_classifier(net, p, train, test, run)
    conditions = cas.training_conditions(p, train, trained_on, guidance)
    return cas.cas_metrics(history, net, test, conditions)


def run(name: str, params_path: Path) -> None:
    params = load_params(params_path)
    if name != REAL:
        params.model(name)  # an unknown name is one line
    folder = METRICS / "cas" if name == REAL else model_dir(name)
    with model_lock(folder, f"t2i cas {name}"):
        _run(name, params)


def _run(name: str, params) -> None:
    p, judge = params.cas, params.judge
    path = METRICS / "cas" / f"{name}.json"
    path.unlink(missing_ok=True)  # a failed run leaves no CAS beside curves it did not draw
    live = [_live(name, None)]
    for folder in (METRICS / "cas" / name).glob("train*"):
        clear_live(folder)
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    test = load_tensors(RAW_FMNIST, "test", None, device)
    if name == REAL:
        metrics = score(name, p, judge, test, None, generator)
    else:
        w = read_chosen_guidance(METRICS / name / "eval.json", params.model(name))
        source = _source(name, device)  # loaded once, for every classifier of the run
        metrics = score(name, p, judge, test, 0.0, generator, source)
        guided = metrics if w == 0 else score(name, p, judge, test, w, generator, source)
        metrics["at_chosen_guidance"] = {k: v for k, v in guided.items() if k in metrics}
        live.append(_live(name, w))
        if p.frontier.samples_per_class:
            ev = params.model(name).evaluate
            sweeps = (ev.guidance_sweep, ev.temperature_sweep)
            metrics |= cas.frontier_cas(source, p, sweeps, judge.feature_dim, test)
    require_finite(metrics, str(path))
    write_metrics(path, validate_metrics(metrics, str(path), cas_schema(name), "nothing written"))
    for folder in dict.fromkeys(live):
        publish_live(folder)
