"""Stages cas@<model>, cas_text@<model> and cas_real: Classification Accuracy Score.

CAS (Ravuri & Vinyals 2019; for VAEs, Lesort et al. 2019): the judge's architecture
(pipeline/models/judge.py) is trained on generated images only, ``cas.samples_per_class`` per
class labelled by the condition they were drawn under (for a text model, the class of the
training phrasing), then tested on the real test set. ``cas_real`` trains the same classifier
with the same recipe on the real training images: the score a perfect generator would reach.
A model that draws only its class means scores high sample accuracy but a low CAS.

A model's CAS is measured at w = 0, at the w its evaluation chose (metrics/<model>/eval.json)
and, on ``cas.frontier_samples_per_class`` samples per class, at every (w, T) of its frontier
(pipeline/cas.py:frontier_cas): guidance buys sample accuracy with diversity, and CAS
measures what the diversity was worth.
"""

from pathlib import Path

from pipeline import cas
from pipeline.atomic import write_json
from pipeline.checkpoint import load_model, require_encoder_weights
from pipeline.config import load_params
from pipeline.data.embeddings import encoder_identity
from pipeline.data.fmnist import load_tensors
from pipeline.finite import require_finite, require_finite_tensor
from pipeline.frontier import read_chosen_guidance
from pipeline.models.registry import model_spec
from pipeline.runtime import make_deterministic, resolve_device
from stages.fingerprint import training_fingerprint
from stages.layout import METRICS, RAW_FMNIST, embeddings_dir, model_dir, state_file

REAL = "real"  # `t2i cas real`: the classifier trained on real images


def _generator_model(name: str, device):
    """The model of ``name`` and its caption embeddings folder (None for a label model)."""
    model, config = load_model(model_dir(name), device)
    embeddings = embeddings_dir(config["encoder"], "fmnist") if "encoder" in config else None
    if embeddings is not None:  # the weights the model was trained on, or none
        require_encoder_weights(config, model_dir(name), encoder_identity(embeddings))
    return model, embeddings


def score(name: str, p, judge, device, generator, x_test, y_test, guidance: float | None) -> dict:
    """Train the classifier on real images (guidance None) or on samples drawn with w."""
    if guidance is None:
        x_train, y_train = load_tensors(RAW_FMNIST, "train", p.real_limit, device)
        trained_on, tag = "the real training images", name
    else:
        model, embeddings = _generator_model(name, device)
        conditioning, n = model_spec(name).conditioning, p.samples_per_class
        x_train, y_train = cas.generated_training_set(
            model, conditioning, embeddings, n, p.temperature, device, generator, guidance
        )
        require_finite_tensor(x_train, f"cas {name}: samples of {model_dir(name)}")
        trained_on, tag = f"samples of {name} only", name + (f"_w{guidance:g}" if guidance else "")
    net = cas.classifier(judge.feature_dim, device)
    history = cas.train_classifier(
        net,
        p,
        generator,
        (x_train, y_train),
        (x_test, y_test),
        tag,
        state_path=state_file(f"cas_{tag}"),
        live_dir=METRICS / "cas" / name / ("train" if tag == name else f"train_w{guidance:g}"),
        fingerprint=training_fingerprint(
            f"t2i cas {name}", net, p, None if tag == name else {"guidance": guidance}
        ),
    )
    temperature = None if guidance is None else p.temperature
    conditions = dict(trained_on=trained_on, training_images=len(x_train), epochs=p.epochs)
    conditions |= {"temperature": temperature, "guidance": guidance}
    return cas.cas_metrics(history, net, (x_test, y_test), conditions)


def run(name: str, params_path: Path) -> None:
    params = load_params(params_path)
    p, judge = params.cas, params.judge
    device = resolve_device(p.device)
    generator = make_deterministic(p.seed, device)
    x_test, y_test = load_tensors(RAW_FMNIST, "test", None, device)
    if name == REAL:
        metrics = score(name, p, judge, device, generator, x_test, y_test, None)
    else:
        w = read_chosen_guidance(METRICS / name / "eval.json")
        metrics = score(name, p, judge, device, generator, x_test, y_test, 0.0)
        guided = metrics if w == 0 else score(name, p, judge, device, generator, x_test, y_test, w)
        metrics["at_chosen_guidance"] = {
            k: v for k, v in guided.items() if k != "at_chosen_guidance"
        }
        if p.frontier_samples_per_class:
            ev = model_spec(name).evaluate_params(params)
            model, embeddings = _generator_model(name, device)
            metrics |= cas.frontier_cas(
                *(model, model_spec(name).conditioning, embeddings, p),
                (ev.guidance_sweep, ev.temperature_sweep),
                *(judge.feature_dim, device, (x_test, y_test), name),
            )
    path = METRICS / "cas" / f"{name}.json"
    write_json(path, require_finite(metrics, str(path)))
