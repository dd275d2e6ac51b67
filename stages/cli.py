"""The `t2i` command: one sub-command per DVC stage, plus `generate`, `report` and `weights`.

It sits above both layers: it imports the stage modules (stages/commands.py names them), and
the library (pipeline/) never imports it or them."""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import typer

from pipeline.atomic import disk_full
from pipeline.errors import PipelineError
from pipeline.redact import RedactingFilter, redact
from stages.commands import choose, stage_module

HELP = """Text-to-image CVAEs (Campbell et al.) as a cached DVC pipeline.

`dvc repro` runs the stages, rerunning only what changed. Each is a command:

  download fmnist | coco  -> data/raw/fmnist, data/coco/manifest\n
  pack coco               -> data/shards/coco (WebDataset tars)\n
  embed ENCODER DATASET   -> data/embeddings/ENCODER/DATASET\n
  judge                   -> models/judge (scores Fashion-MNIST samples)\n
  train MODEL             -> models/MODEL\n
  evaluate MODEL          -> metrics/MODEL, reports/MODEL\n
  cas MODEL | real        -> metrics/cas/MODEL.json (classifier trained on samples only)\n
  report MODEL | --all    -> reports/MODEL/report.html, reports/index.html (not stages)\n
  generate                -> PNG grids: a label, a caption, a prompts file\n
  demo                    -> a browser page on 127.0.0.1 (extra 'demo')\n
  export MODEL DIR        -> a shareable model folder with a model card\n
  weights inception       -> weights/ (the FID/KID network, once)\n
  models                  -> the named models of params.yaml (`models:`)

MODEL is an entry of params.yaml's `models:` (`t2i models` lists them)."""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False)
ParamsOption = typer.Option(Path("params.yaml"), "--params", help="params file to read")


def _unwind_on_sigterm(signum, frame):
    """SIGTERM unwinds the stage as Ctrl-C does, so that every temp file is removed."""
    raise SystemExit(128 + signum)


def _default_sigterm_in_child() -> None:
    # A forked worker (multiprocessing.Pool, DataLoader) must die on SIGTERM at once, as
    # Pool.terminate() expects: a Python-level handler could wait on a lock forever.
    if signal.getsignal(signal.SIGTERM) is _unwind_on_sigterm:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_sigterm_in_child)


def _stage(func: Callable) -> Callable:
    """Show a PipelineError as one clear line, not a traceback; redact credentials in URLs."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _unwind_on_sigterm) if main else None
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # a PipelineError, or a full disk anywhere: one line
            error = exc if isinstance(exc, PipelineError) else disk_full(exc)
            if error is None:
                raise
            typer.echo(f"error: {redact(str(error))}", err=True)
            sys.exit(1)
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _stage_run(command: str, arg: str | None = None, params: Path = Path("params.yaml")):
    return importlib.import_module(stage_module(command, arg, params)).run


@app.command()
@_stage
def download(dataset: str = typer.Argument(..., help="fmnist | coco"), params: Path = ParamsOption):
    """Fetch and verify a dataset (official mirrors, or a local copy)."""
    _stage_run("download", dataset)(params)


@app.command()
@_stage
def pack(dataset: str = typer.Argument(..., help="coco"), params: Path = ParamsOption):
    """Pack verified images into WebDataset tar shards (resized, RGB, deterministic)."""
    _stage_run("pack", dataset)(params)


@app.command()
@_stage
def train(
    model: str = typer.Argument(..., help="an entry of params.yaml models:"),
    params: Path = ParamsOption,
):
    """Train a CVAE; resumes from its last finished epoch."""
    _stage_run("train", model, params)(model, params)


@app.command()
@_stage
def embed(
    encoder: str = typer.Argument(..., help="clip-vit-b-32 | t5-small | minilm"),
    dataset: str = typer.Argument(..., help="fmnist | coco"),
    params: Path = ParamsOption,
):
    """Embed every caption of a dataset once into Parquet shards (torchrun-aware)."""
    _stage_run("embed")(params, encoder, dataset)


@app.command()
@_stage
def judge(params: Path = ParamsOption):
    """Train the Fashion-MNIST judge classifier used to score generated images."""
    _stage_run("judge")(params)


@app.command()
@_stage
def cas(
    model: str = typer.Argument(..., help="real | a Fashion-MNIST entry of models:"),
    params: Path = ParamsOption,
):
    """Classification Accuracy Score: the judge's CNN trained on a model's samples only."""
    from pipeline.config import load_params

    fmnist = [n for n, e in load_params(params).models.items() if e.data == "fmnist"]
    if model != "real" and model not in fmnist:
        raise PipelineError(f"unknown model {model!r}; expected one of {['real', *fmnist]}")
    _stage_run("cas")(model, params)


@app.command()
@_stage
def evaluate(
    model: str = typer.Argument(..., help="an entry of params.yaml models:"),
    params: Path = ParamsOption,
):
    """Write a model's figures (reports/) and metrics (metrics/)."""
    _stage_run("evaluate", model, params)(model, params)


@app.command()
@_stage
def models(params: Path = ParamsOption):
    """List the named models of params.yaml: name, class, conditioning, summary."""
    from pipeline.config import load_params

    for name, entry in load_params(params).models.items():
        typer.echo(f"{name:<20} {entry.class_name:<11} {entry.conditioning:<14} {entry.summary}")


@app.command()
@_stage
def weights(
    name: str = typer.Argument(..., help="inception"),
    dest: Path = typer.Option(None, help="default: a COCO model's evaluate.inception_weights"),
    url: str = typer.Option(None, help="default: torch-fidelity's release file"),
    sha256: str = typer.Option(None, help="sha256 of the file at --url (default: in its name)"),
    params: Path = ParamsOption,
):
    """Fetch the weights an evaluation metric needs (InceptionV3 for FID and KID) once."""
    from pipeline.config import load_params
    from pipeline.sample_quality import fetch_inception

    choose({"inception": None}, name, "weights")
    if dest is None:
        wanted = [
            e.evaluate.inception_weights
            for e in load_params(params).models.values()
            if e.data == "coco" and e.evaluate.inception_weights is not None
        ]
        if not wanted:
            raise PipelineError("no COCO model names evaluate.inception_weights; pass --dest")
        dest = wanted[0]
    typer.echo(f"wrote {fetch_inception(Path(dest), url, sha256)}")


@app.command()
@_stage
def report(
    model: str = typer.Argument(None, help="an entry of params.yaml models: (or --all)"),
    every: bool = typer.Option(False, "--all", help="every model with metrics, and an index"),
    output: Path = typer.Option(
        None, "-o", "--output", help="default reports/MODEL/report.html, or reports/index.html"
    ),
    params: Path = ParamsOption,
):
    """Write one self-contained HTML page of a run: figures, training curves, per-class
    accuracy, metrics and params. With --all: that page for every model with metrics, and
    reports/index.html comparing them in one results table."""
    from stages import report as stage

    if (model is None) == (not every):
        raise PipelineError("give one MODEL, or --all for every model and the comparison page")
    written = stage.run_all(params, output) if every else stage.run(model, params, output)
    typer.echo(f"wrote {written}")


@app.command()
@_stage
def generate(
    label: str = typer.Option(None, "--label", help="class: sneaker, boot, top, handbag, 0-9..."),
    caption: str = typer.Option(None, "--caption", help="text, for a text-conditioned model"),
    negative: str = typer.Option(None, "--negative", help="caption to steer away from (w > 0)"),
    negative_label: str = typer.Option(None, "--negative-label", help="label to steer away from"),
    prompts: Path = typer.Option(
        None, "--prompts", help="file: one caption or label per line; -o names a folder"
    ),
    n: int = typer.Option(16, "-n", help="images per caption or label"),
    output: Path = typer.Option(
        Path("generated.png"), "-o", "--output", help="PNG to write (a folder with --prompts)"
    ),
    model: Path = typer.Option(Path("models/fmnist_label"), "--model", help="trained model dir"),
    columns: int = typer.Option(8, "--columns", min=1),
    seed: int = typer.Option(0, "--seed", help="0 .. 2**63-1; the same seed, the same pixels"),
    guidance: float = typer.Option(0.0, "--guidance", help="w, 0-20 (docs/guidance.md); 0: plain"),
    temperature: float = typer.Option(1.0, "--temperature", help="T, 0.01-10: z = mu + T sd eps"),
    sampler: str = typer.Option(
        "prior",
        "--sampler",
        help="prior | expost: z from p(z|c), or a label model's ex-post density",
    ),
    params: Path = typer.Option(
        None, "--params", help="params file to read (default: ./params.yaml if present)"
    ),
):
    """Write a grid of images from a trained model (models/NAME or an exported folder): for a
    label, a caption, or every line of a prompts file. --sampler expost draws z from a label
    model's ex-post latent density (density.safetensors) instead of its prior."""
    from pipeline.errors import utf8_text
    from stages import generate as stage

    texts = {"--caption": caption, "--label": label, "--negative": negative}
    for flag, text in {**texts, "--negative-label": negative_label}.items():
        if text is not None:  # before any model or encoder is read
            utf8_text(text, flag)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # an error stays one line
    if prompts is not None and (label is not None or caption is not None):
        raise PipelineError("conflicting options: --prompts, and --caption or --label")
    if prompts is not None and (output.suffix.lower() == ".png" or output.is_file()):
        raise PipelineError(f"-o {output}: --prompts writes a folder; give -o FOLDER")
    if prompts is None and (output.is_dir() or output.suffix.lower() != ".png"):
        what, example = "not a .png file name", output.with_suffix(".png")
        if output.is_dir():
            what, example = "a directory", output / "generated.png"
        raise PipelineError(f"-o {output}: {what}; give the PNG to write, e.g. -o {example}")
    sampling = {"guidance": guidance, "temperature": temperature, "seed": seed, "sampler": sampler}
    request = stage.Request(label, caption, negative, negative_label, n, columns, sampling)
    typer.echo(stage.run(model, request, prompts, output, params))


@app.command()
@_stage
def demo(
    model: Path = typer.Option(None, "--model", help="the model shown first (default: the first)"),
    port: int = typer.Option(7860, "--port", min=1, max=65535),
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on (local only)"),
    models: Path = typer.Option(Path("models"), "--models", help="folder of trained models"),
    params: Path = typer.Option(
        None, "--params", help="params file to read (default: ./params.yaml if present)"
    ),
):
    """A browser demo (Gradio) on localhost: type a caption or pick a label, set w, T, seed,
    n (and the sampler, for a model with an ex-post density), and look at the grid. Needs
    Gradio: the optional extra 'demo' (docs/usage.md)."""
    from stages import demo as stage

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    stage.run(models, model, host, port, params)


@app.command()
@_stage
def export(
    model: Path = typer.Argument(..., help="a trained model folder, e.g. models/fmnist_text"),
    dest: Path = typer.Argument(..., help="the folder to write (outside models/)"),
    force: bool = typer.Option(False, "--force", help="replace DEST if it exists"),
    params: Path = ParamsOption,
):
    """A self-contained, shareable model folder: config.json, model.safetensors (and
    density.safetensors, a label model's ex-post density, when it has one), a README.md model
    card (huggingface_hub metadata, metrics with spreads) and a sample grid."""
    from stages import export as stage

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    typer.echo(f"wrote {stage.run(model, dest, force, params)}")


if __name__ == "__main__":
    app()
