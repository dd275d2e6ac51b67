"""`t2i demo`: a Gradio page on localhost to type a caption (or pick a label) and look at the
images, through the Python API (pipeline/api.py).

Controls: the model (every trained model under models/ whose config.json loads, and --model),
the caption or label, a negative caption, w and T, the seed and n. Bad input (an empty or
overlong caption, w = 1e9, guidance on a model that cannot be guided) is shown as one line in
the page's status box, and the server keeps serving. Gradio is an optional extra
(pip install -e '.[demo]'); it runs with analytics off, no share link, local fonts only.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.api import MAX_GUIDANCE, TEMPERATURE_RANGE, Model, grid, load
from pipeline.checkpoint import read_config
from pipeline.errors import PipelineError

INSTALL = "t2i demo needs gradio: pip install -e '.[demo]'"
MAX_N = 64  # images per click; generate.max_samples bounds it too


def trained_models(models_dir: Path, first: Path | None) -> list[tuple[str, str]]:
    """(name shown, folder) of each generative model whose config.json loads: ``first``
    (when given), then the folders under ``models_dir`` in name order."""
    found = [(str(first), str(first))] if first is not None else []
    seen = {Path(first).resolve()} if first is not None else set()
    for folder in sorted(models_dir.iterdir()) if models_dir.is_dir() else []:
        try:
            meta = read_config(folder / "config.json").meta
        except PipelineError:
            continue
        if meta.conditioning is not None and folder.resolve() not in seen:
            found.append((folder.name, str(folder)))
    return found


class Session:
    """The models loaded so far (by folder), and the one handler every click runs."""

    def __init__(self, params: Path | None):
        self.params, self.loaded = params, {}

    def model(self, folder: str) -> Model:
        if folder not in self.loaded:
            self.loaded[folder] = load(folder, self.params)
        return self.loaded[folder]

    def describe(self, folder: str) -> str:
        try:
            m = self.model(folder)
        except PipelineError as exc:
            return f"error: {exc}"
        what = "a caption" if m.kind == "text" else "a label: " + ", ".join(m.labels or [])
        guided = "w > 0 applies" if m.can_guide else "cannot be guided (cond_null_p 0): w 0"
        return f"{m.name}: type {what}; {guided}"

    def draw(self, folder, prompt, negative, guidance, temperature, seed, n):
        """(grid image, status line); a bad input gives (None, 'error: ...')."""
        try:
            m = self.model(folder)
            condition = m.condition(prompt or "", "caption" if m.kind == "text" else "label")
            away = m.condition(negative, "negative") if negative and negative.strip() else None
            w, t = _number(guidance, "guidance w"), _number(temperature, "temperature T")
            seed, n = int(_number(seed, "seed", whole=True)), int(_number(n, "n", whole=True))
            images = m.generate([condition], n, guidance=w, temperature=t, seed=seed, negative=away)
        except PipelineError as exc:
            return None, f"error: {exc}"
        return grid(images, min(8, n)), f"{n} images of {m.name}, w {w:g}, T {t:g}, seed {seed}"


def _number(value, name: str, whole: bool = False) -> float:
    """A number field's value; empty, NaN or a fraction where a whole number belongs is an
    error (the API checks the ranges)."""
    try:
        number = float(value)
        if not whole or number == int(number):
            return number
    except (TypeError, ValueError, OverflowError):  # empty, NaN, inf
        pass
    kind = "a whole number" if whole else "a number"
    raise PipelineError(f"{name} {value}: expected {kind}")


def build(session: Session, choices: list[tuple[str, str]]):
    """The Blocks app."""
    import gradio as gr

    with gr.Blocks(title="t2i-cvae", analytics_enabled=False) as app:
        gr.Markdown("# t2i-cvae\nText-to-image with conditional VAEs: pick a model, type.")
        first = choices[0][1]
        model = gr.Dropdown(choices, value=first, label="model")
        about = gr.Textbox(session.describe(first), label="about", interactive=False)
        prompt = gr.Textbox(label="caption or label", placeholder="white running shoes")
        negative = gr.Textbox(label="negative caption (or label); needs w > 0")
        with gr.Row():  # number fields, not sliders: a slider clamps 1e9 to its end silently
            low, high = TEMPERATURE_RANGE
            guidance = gr.Number(0, step=0.1, label="guidance w", info=f"0 to {MAX_GUIDANCE:g}")
            temperature = gr.Number(1, step=0.05, label="temperature T", info=f"{low} to {high:g}")
        with gr.Row():
            seed = gr.Number(0, precision=0, label="seed")
            n = gr.Slider(1, MAX_N, 8, step=1, label="n")
        button = gr.Button("Generate", variant="primary")
        status = gr.Textbox(label="status", interactive=False, elem_id="status")
        image = gr.Image(label="images", type="pil", format="png", elem_id="output")
        model.change(session.describe, model, about)
        inputs = [model, prompt, negative, guidance, temperature, seed, n]
        button.click(session.draw, inputs, [image, status])
        prompt.submit(session.draw, inputs, [image, status])
    return app


def run(models_dir: Path, first: Path | None, host: str, port: int, params: Path | None):
    """Serve the demo until interrupted."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio as gr
    except ImportError:
        raise PipelineError(INSTALL) from None
    choices = trained_models(models_dir, first)
    if not choices:
        raise PipelineError(f"{models_dir}: no trained model; dvc repro, or give --model DIR")
    local = ["ui-sans-serif", "system-ui", "sans-serif"]  # no font fetched from the web
    theme = gr.themes.Default(font=local, font_mono=["ui-monospace", "monospace"])
    build(Session(params), choices).launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        ssr_mode=False,
        theme=theme,
        show_error=True,
        footer_links=[],
    )
