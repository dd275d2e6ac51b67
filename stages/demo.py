"""`t2i demo`: a Gradio page on 127.0.0.1 to type a caption or a label and look at the images,
through the Python API (pipeline/api.py). Bad input (an empty or overlong caption, w = 1e9,
guidance on a model that cannot be guided) is one line in the page's status box, and the
server keeps serving. A model with an ex-post latent density (a label model trained with an
``expost`` section) also offers the sampler: prior or expost. Gradio is optional
(pip install -e '.[demo]'); no analytics, no share link, no web fonts."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.api import find_models
from pipeline.demo import Session, build
from pipeline.errors import PipelineError

INSTALL = "t2i demo needs gradio: pip install -e '.[demo]'"


def run(models_dir: Path, first: Path | None, host: str, port: int, params: Path | None):
    """Serve the demo until interrupted."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported
    os.environ["HF_HUB_OFFLINE"] = "1"  # no hub requests, telemetry included
    try:
        import gradio as gr
    except ImportError:
        raise PipelineError(INSTALL) from None
    folders = ([first] if first is not None else []) + find_models(models_dir)
    choices = [(str(f) if f == first else f.name, str(f)) for f in dict.fromkeys(folders)]
    if not choices:
        raise PipelineError(f"{models_dir}: no trained model; dvc repro, or give --model DIR")
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # local
    app = build(Session(params), choices)
    app.launch(server_name=host, server_port=port, share=False, ssr_mode=False, theme=theme)
