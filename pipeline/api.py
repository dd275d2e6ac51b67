"""The public Python entry: load a trained model folder and draw images from it.

    from pipeline.api import grid, load

    m = load("models/fmnist_text")            # or an exported folder (t2i export)
    images = m.generate(["white running shoes"], n=4, guidance=1.0, temperature=1.0,
                        seed=0, negative=None)
    grid(images, columns=4).save("shoes.png")

``generate`` returns PIL images, ``n`` per prompt, in prompt order: grey 28x28 for the
Fashion-MNIST models, RGB at the packed size for the COCO ones. A prompt is a caption for a
text model and a class name ('sneaker', 'Ankle boot', '7') for a label model; the folder's own
config.json says which (``m.kind``). The model loads through the same checked path as every
stage (pipeline/checkpoint.py: types, shapes, finite weights, and for a text model the sha256
of the caption encoder's weights).

Sampling is the evaluations' (docs/guidance.md), with either sampler of ``m.samplers``:
``"prior"``: z = mu_p + T sigma_p eps with eps drawn from ``seed``; ``"expost"`` (a label
model trained with an ``expost`` section: its density.safetensors, pipeline/latent_density.py):
z from the ex-post Gaussian mixture of the prompt's class, a component and then a draw from
it with its spread scaled by T. Either z is decoded with guidance w:
l(z, c) + w (l(z, c) - l(z, c')), where c' is the null condition, or the ``negative``
prompt's condition when one is given. Prior: every prompt of a call gets the same n draws of
eps; expost: each prompt's n draws come from its own ``torch.Generator().manual_seed(seed)``.
Either way one seed gives the same pixels for a prompt whichever prompts share its call, and
through ``t2i generate`` too. Bad input is one PipelineError line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.caption_text import clean_caption
from pipeline.checkpoint import load_model, read_config, require_encoder_weights
from pipeline.config import Embed, Generate, load_params
from pipeline.data.fmnist import label_index
from pipeline.errors import PipelineError, utf8_text
from pipeline.evaluate import draw_latents, hwc
from pipeline.figures import image_grid, to_pixels
from pipeline.latent_density import ExPostDensity, saved_density
from pipeline.models.guidance import guided_decode

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64 bits; a signed int64 everywhere
MAX_GUIDANCE = 20.0  # the ranges of w and T that the metrics files hold (pipeline/metrics.py)
TEMPERATURE_RANGE = (0.01, 10.0)
MAX_CAPTION_CHARS = 2000  # refused before tokenising; the encoder's token limit comes next
MAX_PROMPTS_BYTES = 1_000_000  # a prompts file: 1 MB ...
MAX_PROMPTS_LINES = 10_000  # ... and 10,000 lines at most
ENCODER_FILE = "encoder.json"  # an exported text model's caption-encoder params (t2i export)
SAMPLERS = ("prior", "expost")  # z ~ p(z|c), or the ex-post latent density (label models)
CONDITION_FLAGS = {
    "prompt": ("--caption", "--label"),
    "negative": ("--negative", "--negative-label"),
}


@dataclass(frozen=True)
class Condition:
    """One prompt as the decoder takes it: ``vector`` (1, cond_dim), and the ``text`` it came
    from (the cleaned caption, or the class name of a label)."""

    text: str
    vector: torch.Tensor


@dataclass(frozen=True)
class Bounds:
    """params.yaml's ``generate`` bounds, and which file gave them (for error messages)."""

    max_samples: int
    batch_size: int
    source: str


@dataclass(eq=False)
class Model:
    """A trained, checked model and the caption encoder it was trained with (text models).
    Build it with :func:`load`; ``module`` is the torch module, ``config`` its config.json,
    ``meta`` what that says the model is and can do (pipeline/checkpoint.py)."""

    path: Path
    module: torch.nn.Module
    config: dict
    meta: object
    encoder: object | None
    bounds: Bounds
    _density: ExPostDensity | None = field(default=None, init=False, repr=False)

    @property
    def name(self) -> str:
        """The model's entry name in params.yaml (``models:``), as config.json records it."""
        return self.config["name"]

    @property
    def kind(self) -> str:
        """Prompts are captions ("text") or class names ("label"), as config.json says."""
        return "text" if self.meta.is_text else "label"

    @property
    def labels(self) -> list[str] | None:
        """The class names a label model draws, in index order (None for a text model)."""
        return None if self.meta.is_text else list(self.meta.labels or [])

    @property
    def can_guide(self) -> bool:
        """Whether guidance w > 0 applies: the model was trained with cond_null_p > 0."""
        return bool(self.meta.can_guide)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of each generated image."""
        return tuple(self.meta.image_shape)

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of each generated image, as PIL's ``Image.size``."""
        return self.image_shape[2], self.image_shape[1]

    @property
    def samplers(self) -> tuple[str, ...]:
        """Where ``generate`` can draw z: ("prior",), and "expost" too for a label model whose
        config.json records an ex-post density (density.safetensors beside its weights)."""
        return samplers_of(self.meta)

    def describe(self) -> str:
        """One line: what the model takes, whether it can be guided, and its samplers."""
        what = "a caption" if self.kind == "text" else "a label: " + ", ".join(self.labels or [])
        guided = "w > 0 applies" if self.can_guide else "cannot be guided (cond_null_p 0): w 0"
        if len(self.samplers) > 1:
            samplers = "sampler prior or expost (its ex-post latent density)"
        else:
            samplers = "sampler prior only (no ex-post density)"
        return f"{self.name}: type {what}; {guided}; {samplers}"

    def density(self) -> ExPostDensity:
        """The model's ex-post latent density (sampler expost), read and checked once: its
        sha256 against config.json's, its shapes against the model's. A text model, or a
        label model trained without an ``expost`` section, is one line saying what to do."""
        if self.meta.is_text:
            raise PipelineError(
                f"{self.path}: a text model; sampler expost draws z from a per-class ex-post "
                "density, which only a label model can have; use sampler prior"
            )
        if self._density is None:
            latent, classes = self.module.config.latent_dim, len(self.labels)
            self._density = saved_density(self.path, self.meta, latent, classes)
        return self._density

    def __repr__(self) -> str:
        guided = "guidable" if self.can_guide else "not guidable"
        return f"<t2i Model {self.name} ({self.kind}, {guided}) from {self.path}>"

    def condition(self, prompt: str, where: str = "prompt") -> Condition:
        """``prompt`` as a :class:`Condition`: a caption embedded by the model's encoder, or a
        label as its one-hot row. ``where`` names the prompt in an error message."""
        if not isinstance(prompt, str):
            raise PipelineError(f"{where}: expected text, got {type(prompt).__name__}")
        prompt = utf8_text(prompt, where)
        if not self.meta.is_text:
            names = self.labels
            index = _label_index(prompt, names, self.meta.data)
            classes = self.module.config.cond_dim
            if index >= classes:
                raise PipelineError(f"{where}: label {prompt!r} is class {index}, of {classes}")
            vector = F.one_hot(torch.tensor([index]), classes).float()
            return Condition(names[index] if index < len(names) else str(index), vector)
        caption = _visible_caption(prompt, where)
        tokens = self.encoder.token_counts([caption])[0]
        if tokens > self.encoder.info.max_tokens:
            raise PipelineError(
                f"{where}: caption of {tokens} tokens, more than the {self.encoder.info.encoder} "
                f"encoder's {self.encoder.info.max_tokens}; shorten it"
            )
        return Condition(caption, torch.from_numpy(self.encoder.encode([caption])))

    def _conditions(self, prompts, where: str) -> list[Condition]:
        if isinstance(prompts, Condition):
            return [prompts]
        if isinstance(prompts, str):
            return [self.condition(prompts, where)]
        if not isinstance(prompts, Sequence) or not prompts:
            raise PipelineError(f"{where}: expected a caption or label, or a non-empty list")
        return [
            p if isinstance(p, Condition) else self.condition(p, f"{where} {i + 1}")
            for i, p in enumerate(prompts)
        ]

    @torch.no_grad()
    def generate(
        self,
        prompts: str | Condition | Sequence[str | Condition],
        n: int = 1,
        guidance: float = 0.0,
        temperature: float = 1.0,
        seed: int = 0,
        negative: str | Condition | None = None,
        sampler: str = "prior",
    ) -> list[Image.Image]:
        """``n`` images per prompt, in prompt order, as PIL images (mode "L" or "RGB").

        ``guidance`` w >= 0 (0: the plain decoder; > 0 needs ``can_guide``), ``temperature``
        T scales the spread z is drawn with, ``seed`` (0 .. 2**63 - 1) fixes the draws: the
        same seed gives the same pixels. ``negative``: a caption (text model) or label (label
        model) whose condition replaces the null one in the guidance formula, steering away
        from it; at w = 0 it changes nothing. ``sampler``: "prior" (z ~ p(z|c)) or "expost"
        (z from the ex-post density of the prompt's class; a label model with one, see
        ``samplers``); each prompt's expost draws come from
        ``torch.Generator().manual_seed(seed)``, as ``pipeline.evaluate.sample_images`` draws
        them for n rows of that prompt's condition."""
        check_sampling(guidance, temperature, seed, sampler)
        if guidance > 0 and not self.can_guide:
            raise PipelineError(
                f"{self.path}: trained without a null condition (cond_null_p 0): it cannot be "
                "guided; use guidance 0"
            )
        density = self.density() if sampler == "expost" else None
        conditions = self._conditions(prompts, "prompt")
        self.check_count(n, len(conditions))
        away = negative
        if negative is not None and not isinstance(negative, Condition):
            away = self.condition(negative, "negative")
        out = []
        for condition in conditions:
            z = self._latents(condition, int(n), (temperature, int(seed)), density)
            for start in range(0, n, self.bounds.batch_size):
                part = z[start : start + self.bounds.batch_size]
                images = self._decode(condition, part, guidance, away)
                out += [Image.fromarray(tile) for tile in to_pixels(self._tiles(images))]
        return out

    def check_count(self, n: int, prompts: int = 1) -> None:
        """Refuse ``n`` images per prompt over ``prompts`` prompts beyond generate.max_samples."""
        most = self.bounds.max_samples
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
            raise PipelineError(f"-n {n!r}: expected a whole number of images, at least 1")
        if n > most:
            raise PipelineError(
                f"-n {n}: more than generate.max_samples = {most} images in one grid "
                f"({self.bounds.source}); ask for fewer, or raise generate.max_samples"
            )
        if n * prompts > most:
            raise PipelineError(
                f"{prompts} prompts x -n {n} = {n * prompts} images: more than "
                f"generate.max_samples = {most} ({self.bounds.source}); ask for fewer"
            )

    def _latents(self, condition, n: int, at: tuple[float, int], density) -> torch.Tensor:
        """n latents for ``condition`` at ``at`` = (temperature, seed), as the evaluations
        draw them (pipeline.evaluate.draw_latents): mu_p + T sigma_p eps with the seed's n
        standard-normal rows (the same for every prompt), or ``density``'s draws for the
        condition's class."""
        temperature, seed = at
        device = next(self.module.parameters()).device
        c = condition.vector.to(device).expand(n, -1)
        generator = torch.Generator().manual_seed(seed)
        return draw_latents(self.module, c, generator, temperature, density)

    def _decode(self, condition, z, guidance, negative) -> torch.Tensor:
        c = condition.vector.to(z.device).expand(len(z), -1)
        if negative is None or guidance == 0:
            return guided_decode(self.module, z, c, guidance)
        # l(z, c) + w (l(z, c) - l(z, c_neg)): pipeline/models/guidance.py with c_neg in
        # place of the null condition (the negative prompt of diffusers #699).
        logits = self.module.decode_logits(z, c)
        away = self.module.decode_logits(z, negative.vector.to(z.device).expand(len(z), -1))
        return self.module.images_from_logits(logits + guidance * (logits - away))

    def _tiles(self, images: torch.Tensor) -> np.ndarray:
        channels, height, width = self.image_shape
        if channels not in (1, 3) or images[0].numel() != channels * height * width:
            raise PipelineError(
                f"{self.path}: the decoder gives {tuple(images.shape[1:])} per image, not an "
                f"image t2i generate knows ({channels}x{height}x{width} expected: grey "
                "1x28x28 or RGB 3xSxS)"
            )
        images = images.float().cpu().reshape(len(images), channels, height, width)
        return images[:, 0].numpy() if channels == 1 else hwc(images)


def samplers_of(meta) -> tuple[str, ...]:
    """The samplers a model whose config.json says ``meta`` (checkpoint.SavedMeta) offers:
    prior always, expost for a label model with a saved ex-post density."""
    return SAMPLERS if not meta.is_text and meta.has_density else SAMPLERS[:1]


def check_sampling(guidance: float, temperature: float, seed: int, sampler: str = "prior") -> None:
    """Refuse a guidance, temperature, seed or sampler outside its range, in one line (numpy
    numbers are numbers; a bool is none)."""
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise PipelineError(f"sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed <= MAX_SEED:
        raise PipelineError(f"seed {seed}: expected a whole number from 0 to 2**63 - 1")
    if not _real(guidance) or not 0 <= guidance <= MAX_GUIDANCE:
        shown = (
            f"{guidance:g}" if _real(guidance) or isinstance(guidance, float) else repr(guidance)
        )
        raise PipelineError(f"guidance {shown}: expected w from 0 to {MAX_GUIDANCE:g}")
    low, high = TEMPERATURE_RANGE
    if not _real(temperature) or not low <= temperature <= high:
        raise PipelineError(f"temperature {temperature!r}: expected T from {low:g} to {high:g}")


def _real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _visible_caption(text: str, where: str) -> str:
    """The caption cleaned as caption files clean theirs; refused when empty, when nothing in
    it is visible (zero-width spaces, joiners, format characters only) or when too long."""
    if len(text) > MAX_CAPTION_CHARS:
        raise PipelineError(
            f"{where}: caption of {len(text):,} characters, more than {MAX_CAPTION_CHARS:,}; "
            "shorten it"
        )
    return clean_caption(text, where)  # empty, or nothing visible: refused there


def _label_index(text: str, labels: list[str], data: str) -> int:
    if data == "fmnist":  # its aliases too: 'sneaker', 'boot', 'top', 'handbag'
        return label_index(text)
    key = text.strip().lower()
    if key.isascii() and key.isdigit() and int(key) < len(labels):
        return int(key)
    for index, label in enumerate(labels):
        if key == label.lower():
            return index
    raise PipelineError(f"unknown label {text!r}; expected 0-{len(labels) - 1} or one of {labels}")


def load(model_dir: str | Path, params: str | Path | None = None, device: str = "cpu") -> Model:
    """The model in ``model_dir`` (models/<name>, or a folder ``t2i export`` wrote), checked.

    ``params``: the params.yaml whose ``generate`` bounds apply and whose ``embed`` section
    names a text model's encoder weights; None: ./params.yaml when there is one, else the
    schema's defaults. An exported folder carries its encoder's params (encoder.json) and
    needs none. ``device``: "cpu", "cuda", ..."""
    path = Path(model_dir)
    bounds, embed, source = _params(params)
    meta = read_config(path / "config.json").meta
    if meta.conditioning is None:
        raise PipelineError(f"{path}: {meta.name} is a classifier, it generates nothing")
    module, config = load_model(path, torch.device(device))
    encoder = None
    if meta.is_text:
        from pipeline.encoders import load_encoder

        spec = encoder_params(path, meta.conditioning, embed)
        encoder = load_encoder(meta.conditioning, spec, torch.device(device))
        require_encoder_weights(config, path, encoder.info)
    limits = Bounds(bounds.max_samples, bounds.batch_size, source)
    return Model(path, module, config, meta, encoder, limits)


def _params(params: str | Path | None) -> tuple[Generate, Embed, str]:
    """(generate bounds, embed section, where they came from)."""
    if params is None:
        if not Path("params.yaml").is_file():
            return Generate(), Embed(), "the schema's default"
        params = "params.yaml"
    loaded = load_params(Path(params))
    return loaded.generate, loaded.embed, str(params)


def encoder_params(path: Path, encoder: str, embed: Embed):
    """The encoder's params section: the exported folder's own, else params.yaml's."""
    default = embed.encoder(encoder)
    exported = path / ENCODER_FILE
    if not exported.exists():
        return default
    from pipeline.jsonfile import read_json

    data = read_json(exported, "encoder params JSON", "export the model again")
    try:
        return type(default).model_validate(data)
    except ValueError as exc:
        message = str(exc).splitlines()
        raise PipelineError(f"{exported}: {' '.join(message[:3])[:200]}") from None


def grid(
    images: Sequence[Image.Image], columns: int = 8, labels: list[str] | None = None
) -> Image.Image:
    """The images as one PNG-ready grid, ``columns`` per row, each tile scaled up to at least
    64 pixels (28 -> 56; 224 stays), as ``t2i generate`` writes it. ``labels``: one per row."""
    if not images:
        raise PipelineError("grid: no images")
    tiles = np.stack([np.asarray(image) for image in images])
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    return image_grid(rows, labels=labels, scale=max(1, 64 // tiles.shape[1]))


def read_prompts(path: str | Path) -> list[tuple[int, str]]:
    """(line number, text) of each prompt of a prompts file: one caption or label per line,
    blank lines and ``#`` comments skipped. The file must be UTF-8 text without NUL bytes, of
    at most 1 MB and 10,000 lines; its size is checked before it is read, and at most that
    much is read. Each line is cleaned and checked later, when it is conditioned on."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such prompts file (one caption or label per line)")
    size = path.stat().st_size
    if size > MAX_PROMPTS_BYTES:
        raise PipelineError(
            f"{path}: {size:,} bytes, more than the {MAX_PROMPTS_BYTES:,} a prompts file may "
            "hold; split it"
        )
    with open(path, "rb") as handle:
        data = handle.read(MAX_PROMPTS_BYTES + 1)
    if len(data) > MAX_PROMPTS_BYTES:  # it grew after the stat
        raise PipelineError(f"{path}: more than {MAX_PROMPTS_BYTES:,} bytes; split it")
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the end of the last line, not a line
    if len(lines) > MAX_PROMPTS_LINES:
        raise PipelineError(
            f"{path}: {len(lines):,} lines, more than the {MAX_PROMPTS_LINES:,} a prompts file "
            "may hold; split it"
        )
    where = data.find(b"\0")
    if where >= 0:
        line = data.count(b"\n", 0, where) + 1
        raise PipelineError(
            f"{path}: line {line}: a NUL byte at offset {where}; a prompts file is UTF-8 text"
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PipelineError(
            f"{path}: line {line}: byte 0x{data[exc.start]:02x} at offset {exc.start} is not "
            "UTF-8; save the file as UTF-8"
        ) from None
    prompts = []
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8").removesuffix("\r")
        text = text.removeprefix("\ufeff") if number == 1 else text  # a byte-order mark
        if text.strip() and not text.strip().startswith("#"):
            prompts.append((number, text))
    if not prompts:
        raise PipelineError(f"{path}: no prompts (only blank lines and # comments)")
    return prompts


def prompt_file_name(number: int, text: str) -> str:
    """NNNN-<slug>.png: a prompts file line's number, and its text as lowercase a-z, 0-9
    and '-' (at most 40 characters; the number alone when nothing is left)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")
    return "-".join(filter(None, [f"{number:04d}", slug])) + ".png"


def pick_condition(model: Model, caption: str | None, label: str | None, what: str, w: float = 0):
    """The condition of whichever of --caption/--label (``what`` "prompt"), or of the
    --negative/--negative-label pair (``what`` "negative", which needs guidance ``w`` > 0),
    fits the model, as `t2i generate` takes them; None when neither is given."""
    flags = CONDITION_FLAGS[what]
    right, wrong = flags if model.kind == "text" else flags[::-1]
    if caption is not None and label is not None:
        raise PipelineError(
            f"conflicting options {flags[0]} and {flags[1]}: {model.path} is a {model.kind} "
            f"model; give {right} only"
        )
    kind = "text" if model.kind == "text" else "labels"
    if (label if model.kind == "text" else caption) is not None:
        raise PipelineError(f"{model.path} is conditioned on {kind}: give {right}, not {wrong}")
    text = caption if model.kind == "text" else label
    if text is None and what == "prompt":
        raise PipelineError(f"{model.path} is conditioned on {kind}: give {right}")
    if text is not None and what == "negative" and w == 0:
        raise PipelineError(f"{right} needs --guidance > 0: at w = 0 it changes nothing")
    return None if text is None else model.condition(text, right)


def find_models(folder: str | Path = "models") -> list[Path]:
    """The generative model folders under ``folder`` whose config.json loads, by name (the
    judge and anything unreadable left out); their weights are checked by :func:`load`."""
    found = []
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        try:
            if read_config(path / "config.json").meta.conditioning is not None:
                found.append(path)
        except PipelineError:
            continue
    return found
