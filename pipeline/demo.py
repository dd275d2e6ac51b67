"""The `t2i demo` page (stages/demo.py serves it): a :class:`Session` holds the models loaded so
far and answers every click through the Python API (pipeline/api.py); :func:`build` lays out
the Gradio Blocks. Bad input is one ``error: ...`` line in the page's status box. Gradio is
imported only inside the functions that need it (it is the optional extra 'demo')."""

from __future__ import annotations

from pathlib import Path

from pipeline.api import MAX_GUIDANCE, TEMPERATURE_RANGE, Model, grid, load
from pipeline.errors import PipelineError


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
            return self.model(folder).describe()
        except PipelineError as exc:
            return f"error: {exc}"

    def samplers(self, folder: str) -> tuple[str, ...]:
        """The model's samplers; ("prior",) when it does not load (its error is the about)."""
        try:
            return self.model(folder).samplers
        except PipelineError:
            return ("prior",)

    def about(self, folder: str):
        """On a model change: its about line, and the sampler choice, back at prior and shown
        only when the model has an ex-post density."""
        import gradio as gr

        samplers = self.samplers(folder)
        choice = gr.update(choices=list(samplers), value="prior", visible=len(samplers) > 1)
        return self.describe(folder), choice

    def draw(self, folder, prompt, negative, sampler, *numbers):
        """(grid image, status line); a bad input gives (None, 'error: ...'). ``numbers``:
        the guidance w, temperature T, seed and n fields."""
        try:
            m = self.model(folder)
            condition = m.condition(prompt or "", "caption" if m.kind == "text" else "label")
            away = m.condition(negative, "negative") if negative and negative.strip() else None
            guidance, temperature, seed, n = numbers
            w, t = _number(guidance, "guidance w"), _number(temperature, "temperature T")
            seed, n = int(_number(seed, "seed", whole=True)), int(_number(n, "n", whole=True))
            sampling = {"guidance": w, "temperature": t, "seed": seed, "sampler": sampler}
            images = m.generate([condition], n, negative=away, **sampling)
        except PipelineError as exc:
            return None, f"error: {exc}"
        status = f"{n} images of {m.name}, w {w:g}, T {t:g}, seed {seed}"
        if len(m.samplers) > 1:
            status += f", sampler {sampler}"
        return grid(images, min(8, n)), status


def _number(value, name: str, whole: bool = False) -> float:
    """A number field's value (the API checks its range); empty, NaN or inf is an error."""
    try:
        if not whole or float(value) == int(value):
            return float(value)
    except (TypeError, ValueError, OverflowError):
        pass
    raise PipelineError(f"{name} {value}: expected {'a whole number' if whole else 'a number'}")


def build(session: Session, choices: list[tuple[str, str]]):
    """The Blocks app."""
    import gradio as gr

    with gr.Blocks(title="t2i-cvae", analytics_enabled=False) as app:
        gr.Markdown("# t2i-cvae\nText-to-image with conditional VAEs: pick a model, type.")
        model = gr.Dropdown(choices, value=choices[0][1], label="model")
        about = gr.Textbox(session.describe(choices[0][1]), label="about", interactive=False)
        prompt = gr.Textbox(label="caption or label", placeholder="white running shoes")
        negative = gr.Textbox(label="negative caption (or label); needs w > 0")
        samplers = session.samplers(choices[0][1])
        sampler = gr.Radio(
            list(samplers),
            value="prior",
            label="sampler",
            info="prior: z ~ p(z|c); expost: the model's ex-post latent density",
            visible=len(samplers) > 1,
            elem_id="sampler",
        )
        with gr.Row():  # number fields, not sliders: a slider clamps 1e9 to its end silently
            low, high = TEMPERATURE_RANGE
            guidance = gr.Number(0, step=0.1, label="guidance w", info=f"0 to {MAX_GUIDANCE:g}")
            temperature = gr.Number(1, step=0.05, label="temperature T", info=f"{low} to {high:g}")
        with gr.Row():
            seed = gr.Number(0, precision=0, label="seed")
            n = gr.Slider(1, 64, 8, step=1, label="n")  # generate.max_samples bounds it too
        button = gr.Button("Generate", variant="primary")
        status = gr.Textbox(label="status", interactive=False, elem_id="status")
        image = gr.Image(label="images", type="pil", format="png", elem_id="output")
        model.change(session.about, model, [about, sampler])
        inputs = [model, prompt, negative, sampler, guidance, temperature, seed, n]
        button.click(session.draw, inputs, [image, status])
        prompt.submit(session.draw, inputs, [image, status])
    return app
