"""Stages cas@<model>, cas_text@<model> and cas_real: Classification Accuracy Score (Ravuri &
Vinyals 2019): the judge's architecture trained on ``cas.samples_per_class`` generated images
per class only (``cas_real``: the real training images), tested on the real test set. A
model's CAS: at the (sampler, w, T) its evaluation chose on validation data, by the headline
recipe (the FitSpec keys of ``cas``), and at every frontier point by ``cas.frontier``'s
cheaper one. The run holds the model's lock and publishes its curves with the CAS file."""

from pathlib import Path

from pipeline import cas
from pipeline.checkpoint import load_model, read_config, require_encoder_weights
from pipeline.config import load_params
from pipeline.data.embeddings import encoder_identity
from pipeline.data.fmnist import load_tensors
from pipeline.finite import require_finite
from pipeline.frontier import read_chosen_point, sampler_density
from pipeline.lock import model_lock
from pipeline.metrics import cas_schema, validate_metrics, write_metrics
from pipeline.runtime import make_deterministic, resolve_device
from pipeline.train import FitRun, clear_live, publish_live
from stages.fingerprint import training_fingerprint
from stages.layout import METRICS, RAW_FMNIST, embeddings_dir, model_dir, state_file

REAL = "real"  # `t2i cas real`: the classifier trained on real images


def _source(name: str, device) -> cas.SampleSource:
    """The model of ``name`` as a sample source; its conditioning is what its config says,
    and its ex-post density is the one saved beside it (if its config records one)."""
    folder = model_dir(name)
    model, config = load_model(folder, device)
    meta = read_config(folder / "config.json").meta
    conditioning = config["conditioning"]
    embeddings = None if conditioning == "label" else embeddings_dir(conditioning, "fmnist")
    if embeddings is not None:  # the weights the model was trained on, or none
        require_encoder_weights(config, folder, encoder_identity(embeddings))
    density = sampler_density(folder, meta, model, ["expost"] if meta.has_density else [])
    return cas.SampleSource(model, conditioning, embeddings, device, name, density)


def _live(name: str) -> Path:
    return METRICS / "cas" / name / "train"


def score(name: str, p, judge, test, at: tuple | None, generator, source=None) -> dict:
    """The classifier trained on real images (``at`` None) or on samples drawn at ``at``
    (sampler, w, T), by the headline recipe ``p``."""
    device = test[0].device
    if at is None:
        train = load_tensors(RAW_FMNIST, "train", p.real_limit, device)
        trained_on = "the real training images"
    else:
        train = cas.cas_training_data(source, p, at, generator)
        trained_on = f"samples of {name} only"
    net = cas.classifier(judge.feature_dim, device)
    point = None if at is None else {"sampler": at[0], "guidance": at[1], "temperature": at[2]}
    fingerprint = training_fingerprint(f"t2i cas {name}", net, p, point)
    run = FitRun(f"cas {name}", generator, fingerprint, state_file(f"cas_{name}"), _live(name))
    history = cas.train_classifier(net, p, train, test, run)
    conditions = cas.training_conditions(p, train, trained_on, at)
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
    for folder in (METRICS / "cas" / name).glob("train*"):
        clear_live(folder)
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    test = load_tensors(RAW_FMNIST, "test", None, device)
    if name == REAL:
        metrics = score(name, p, judge, test, None, generator)
    else:
        at = read_chosen_point(METRICS / name / "eval.json", params.model(name))
        source = _source(name, device)  # loaded once, for every classifier of the run
        metrics = score(name, p, judge, test, at, generator, source)
        if p.frontier.samples_per_class:
            ev = params.model(name).evaluate
            samplers = getattr(ev, "sampler_sweep", ["prior"])
            sweeps = (samplers, ev.guidance_sweep, ev.temperature_sweep)
            metrics |= cas.frontier_cas(source, p, sweeps, judge.feature_dim, test)
    require_finite(metrics, str(path))
    write_metrics(path, validate_metrics(metrics, str(path), cas_schema(name), "nothing written"))
    publish_live(_live(name))
