"""Ex-post latent density: sample a trained CVAE where its decoder was trained (issue 20, part 3).

A VAE trained with the N(0, I) prior leaves "holes": regions the prior covers but the
aggregate posterior does not, whose decodes are incoherent, and dense regions the prior
under-samples, so hard real cases (a sandal's straps, a shirt's placket) are drawn too
rarely. Ghosh et al. (2020, "From Variational to Deterministic Autoencoders", ex-post
density estimation) fit a Gaussian mixture to the posterior means of the training images
after training and sample z from it instead of the prior; Dai & Wipf's two-stage VAE (2019)
is the same idea with a second VAE. Here one mixture is fitted per class, so a sample of
class k draws z from where class k's training images lie:

    fit     mu(x_i, c_i) = E q(z|x_i, c_i) over the training images; per class k a
            Gaussian mixture (J components, full covariances) on {mu_i : y_i = k}, by EM
            from a k-means start (``gaussian_mixture``, in torch, float64)
    sample  component j ~ Categorical(weights_k); z = mean_kj + T chol(cov_kj) eps

Measured in benchmarks/coverage_probe.py (docs/coverage.md): on the conv CVAE it raises judge
accuracy, lowers judge-feature FD, widens the within-class spread and raises CAS, with no
retraining (that run fitted the mixtures with scikit-learn's GaussianMixture, the same
model, EM and k-means start; this torch EM is not bit-identical to it). The model must have
``encode(x, c) -> (mu, logvar)`` and ``decode(z, c)``.

Degenerate input is one PipelineError naming the argument: NaN or inf codes, components
< 1, labels that are not integers in [0, num_classes), a temperature that is not a finite
number > 0, and a class with fewer codes than ``components``: that is refused, not fitted
with fewer components, so every class has the J components asked for and a saved file has
one shape. A class with at least J codes is fitted, however degenerate (all codes equal,
collinear): every covariance gets ``REG_COVAR`` times the scale of its class's codes on its
diagonal (the mean per-dimension variance, plus float64 eps times the mean square so that
constant codes get a floor of their own size; 1 for all-zero codes). scikit-learn adds an
absolute 1e-6, which codes of scale 1e6 drown in rounding, so their Cholesky factorisation
failed; relative to the scale, the same data scaled by any factor gives the same mixture
scaled by it. A draw that comes out non-finite (the mixture's scale times the temperature
overflows float32) is refused, never returned.

Files: ``save(path)`` writes one safetensors file atomically (tensors ``weights`` (K, J),
``means`` (K, J, L), ``chol`` (K, J, L, L), float32; metadata ``meta``: the JSON of
``DensityMeta``, its ``format``, ``classes``, ``components`` and ``latent_dim``, one key as in
pipeline/checkpoint.py, since safetensors writes several in a random order) and returns its
sha256, the same for the same mixtures.
``load(path, sha256)`` checks everything before use: the hash when given, the format, that
the metadata and every shape agree, finite values, each class's weights >= 0 summing to 1,
each Cholesky factor lower-triangular with a positive diagonal.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from pipeline.atomic import atomic_path
from pipeline.errors import PipelineError
from pipeline.hashing import sha256_file

REG_COVAR = 1e-6  # times the codes' scale, on every covariance's diagonal: no collapse
FORMAT = "t2i-cvae ex-post density"  # the "format" of a saved file's metadata
WEIGHT_SUM_TOL = 1e-5  # float32 weights of a class sum to 1 within this
TENSORS = ("weights", "means", "chol")


class DensityMeta(BaseModel):
    """A saved density's safetensors metadata: the JSON under the key ``meta``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    format: Literal[FORMAT] = Field(description="what the file is")
    classes: int = Field(ge=1, description="K: one mixture per class")
    components: int = Field(ge=1, description="J: Gaussians per mixture")
    latent_dim: int = Field(ge=1, description="L: size of z")


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PipelineError(f"{name}: expected an integer >= 1, got {value!r}")
    return value


def _finite_codes(codes, what: str = "codes") -> torch.Tensor:
    """``codes`` as a (N >= 1, L >= 1) real tensor with no NaN or inf, else one line."""
    codes = torch.as_tensor(codes)
    if codes.dim() != 2 or codes.shape[0] < 1 or codes.shape[1] < 1:
        raise PipelineError(
            f"{what}: expected a 2-D tensor (rows, latent_dim), got shape {list(codes.shape)}"
        )
    if codes.is_complex() or codes.dtype == torch.bool:
        raise PipelineError(f"{what}: expected real numbers, got {codes.dtype}")
    bad = int((~torch.isfinite(codes)).any(1).sum())
    if bad:
        raise PipelineError(
            f"{what}: {bad} of {_count(len(codes), 'row')} hold NaN or inf; "
            "expected finite latent codes"
        )
    return codes


def _class_labels(labels, num_classes: int, rows: int | None) -> torch.Tensor:
    """``labels`` as a (rows,) integer tensor in [0, num_classes), else one line naming the
    first bad label."""
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise PipelineError(f"labels: expected integer class indices, got {labels.dtype}")
    if labels.dim() != 1 or (rows is not None and len(labels) != rows):
        want = "(N,)" if rows is None else f"({rows},), one per row"
        raise PipelineError(f"labels: expected shape {want}, got {list(labels.shape)}")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        raise PipelineError(
            f"labels: label {int(labels[row])} (row {row}, one of "
            f"{_count(int(bad.sum()), 'bad label')}) is not a class; expected integers in "
            f"[0, {num_classes}) for {num_classes} classes"
        )
    return labels.long()


def _temperature(temperature) -> float:
    try:
        value = float(temperature)
    except (TypeError, ValueError, RuntimeError):
        value = math.nan
    if isinstance(temperature, bool) or not math.isfinite(value) or value <= 0:
        raise PipelineError(f"temperature: expected a finite number > 0, got {temperature!r}")
    return value


def covariance_scale(x: torch.Tensor) -> float:
    """The scale ``REG_COVAR`` is relative to: the mean per-dimension variance of the rows of
    ``x``, plus float64 eps times their mean square (constant rows: a floor of their own size);
    1 for all-zero rows."""
    x = x.double()
    scale = float(x.var(0, correction=0).mean() + torch.finfo(x.dtype).eps * x.pow(2).mean())
    return scale if scale > 0 else 1.0


def _kmeans(x: torch.Tensor, k: int, generator: torch.Generator, steps: int = 20):
    """Cluster index (N,) of each row of ``x`` after k-means++ seeding and Lloyd steps."""
    centres = x[torch.randint(len(x), (1,), generator=generator)]
    for _ in range(1, k):
        d2 = torch.cdist(x, centres).min(1).values.pow(2)
        odds = d2 if d2.sum() > 0 else torch.ones_like(d2)  # all rows equal: any of them
        pick = torch.multinomial(odds, 1, generator=generator)
        centres = torch.cat([centres, x[pick]])
    for _ in range(steps):
        assign = torch.cdist(x, centres).argmin(1)
        for j in range(k):
            members = x[assign == j]
            if len(members):  # an empty cluster keeps its centre
                centres[j] = members.mean(0)
    return torch.cdist(x, centres).argmin(1)


def _m_step(x: torch.Tensor, resp: torch.Tensor, reg: float):
    """(weights (J,), means (J, L), covariances (J, L, L)) from responsibilities (N, J)."""
    n_k = resp.sum(0) + 10 * torch.finfo(x.dtype).eps
    means = resp.T @ x / n_k[:, None]
    diff = x[None] - means[:, None]  # (J, N, L)
    cov = torch.einsum("jn,jnl,jnm->jlm", resp.T, diff, diff) / n_k[:, None, None]
    cov = cov + reg * torch.eye(x.shape[1], dtype=x.dtype)
    return n_k / len(x), means, cov


def _cholesky(cov: torch.Tensor) -> torch.Tensor:
    lower, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):  # the relative regulariser should make this unreachable
        j = int((info != 0).nonzero()[0, 0])
        raise PipelineError(
            f"x: the covariance of component {j} is not positive definite; "
            "the codes are too ill-conditioned to fit (rescale them or lower components)"
        )
    return lower


def _log_joint(x: torch.Tensor, weights, means, chol) -> torch.Tensor:
    """(N, J): log w_j + log N(x_n; mean_j, chol_j chol_j^T)."""
    diff = (x[None] - means[:, None]).transpose(1, 2)  # (J, L, N)
    white = torch.linalg.solve_triangular(chol, diff, upper=False)
    log_det = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
    maha = white.pow(2).sum(1).T  # (N, J)
    return torch.log(weights) - 0.5 * (x.shape[1] * math.log(2 * math.pi) + log_det + maha)


def gaussian_mixture(
    x: torch.Tensor, components: int, seed: int, max_iter: int = 100, tol: float = 1e-3
):
    """Maximum-likelihood mixture of ``components`` full-covariance Gaussians on the rows of
    ``x`` (N, L) by EM, started from k-means (the recipe of scikit-learn's GaussianMixture,
    with the covariance regulariser relative to ``covariance_scale(x)``):
    (weights (J,), means (J, L), Cholesky factors (J, L, L)), float64. EM stops when the mean
    log-likelihood moves by less than ``tol``. ``x`` needs at least ``components`` rows."""
    components = _positive_int(components, "components")
    x = _finite_codes(x, "x").double()
    if len(x) < components:
        raise PipelineError(
            f"components={components}: x has {_count(len(x), 'row')}; expected at least "
            "one row per component"
        )
    reg = REG_COVAR * covariance_scale(x)
    generator = torch.Generator().manual_seed(seed)
    resp = F.one_hot(_kmeans(x, components, generator), components).double()
    weights, means, cov = _m_step(x, resp, reg)
    previous = -math.inf
    for _ in range(max_iter):
        log_joint = _log_joint(x, weights, means, _cholesky(cov))
        log_px = torch.logsumexp(log_joint, 1)
        weights, means, cov = _m_step(x, torch.exp(log_joint - log_px[:, None]), reg)
        current = float(log_px.mean())
        if abs(current - previous) < tol:
            break
        previous = current
    return weights, means, _cholesky(cov)


def mixture_problem(weights: torch.Tensor, means: torch.Tensor, chol: torch.Tensor) -> str | None:
    """What is wrong with mixture parameters (K, J), (K, J, L), (K, J, L, L), or None: shapes
    that disagree, non-finite values, a class's weights not >= 0 summing to 1, a Cholesky
    factor not lower-triangular with a positive diagonal."""
    if weights.dim() != 2 or min(weights.shape) < 1:
        return f"tensor weights has shape {list(weights.shape)}; expected (classes, components)"
    k, j = weights.shape
    if means.dim() != 3 or tuple(means.shape[:2]) != (k, j) or means.shape[2] < 1:
        return f"tensor means has shape {list(means.shape)}; expected ({k}, {j}, latent_dim)"
    size = means.shape[2]
    if tuple(chol.shape) != (k, j, size, size):
        return f"tensor chol has shape {list(chol.shape)}; expected {[k, j, size, size]}"
    for name, value in zip(TENSORS, (weights, means, chol), strict=True):
        if not bool(torch.isfinite(value).all()):
            return f"tensor {name} holds NaN or inf"
    sums = weights.double().sum(1)
    for c in range(k):
        if bool((weights[c] < 0).any()) or abs(float(sums[c]) - 1) > WEIGHT_SUM_TOL:
            return (
                f"the weights of class {c} sum to {float(sums[c]):.6g} or hold a negative one; "
                "expected weights >= 0 summing to 1"
            )
    upper = torch.triu(chol, 1).ne(0).flatten(2).any(2) | (chol.diagonal(0, 2, 3) <= 0).any(2)
    if bool(upper.any()):
        c, m = (int(i) for i in upper.nonzero()[0])
        return (
            f"the Cholesky factor of class {c}, component {m} is not lower-triangular with a "
            "positive diagonal"
        )
    return None


class ExPostDensity:
    """Per-class Gaussian mixtures over latent codes; ``sample`` draws z for given classes."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, chol: torch.Tensor):
        # (K, J) mixture weights, (K, J, L) means, (K, J, L, L) Cholesky factors of covariances
        self.weights, self.means, self.chol = weights, means, chol

    @classmethod
    def fit_codes(
        cls, codes: torch.Tensor, labels: torch.Tensor, num_classes: int, components: int, seed: int
    ) -> ExPostDensity:
        """Fit the mixtures to ``codes`` (N, L) grouped by ``labels`` (N,) in 0..num_classes-1;
        every class needs at least ``components`` codes."""
        num_classes = _positive_int(num_classes, "num_classes")
        components = _positive_int(components, "components")
        codes = _finite_codes(codes).detach().cpu()
        labels = _class_labels(labels, num_classes, len(codes)).cpu()
        counts = torch.bincount(labels, minlength=num_classes)
        for k in range(num_classes):
            if counts[k] < components:
                raise PipelineError(
                    f"components={components}: class {k} has {_count(int(counts[k]), 'code')};"
                    " expected at least one code per component in every class (lower "
                    "components or give each class more codes)"
                )
        fits = [gaussian_mixture(codes[labels == k], components, seed) for k in range(num_classes)]
        weights, means, chol = (torch.stack(part).float() for part in zip(*fits, strict=True))
        problem = mixture_problem(weights, means, chol)
        if problem is not None:  # float64 values beyond float32's range
            raise PipelineError(
                f"codes: the fitted mixtures do not fit in float32 ({problem}); rescale the codes"
            )
        return cls(weights, means, chol)

    @classmethod
    @torch.no_grad()
    def fit(
        cls,
        model: torch.nn.Module,
        x: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        components: int = 10,
        seed: int = 0,
        batch_size: int = 1000,
    ) -> ExPostDensity:
        """Mixtures over the posterior means of images ``x`` (N, 784) under their one-hot labels."""
        num_classes = _positive_int(num_classes, "num_classes")
        batch_size = _positive_int(batch_size, "batch_size")
        labels = _class_labels(labels, num_classes, len(x))
        model.eval()
        c = F.one_hot(labels, num_classes).float()
        mu = torch.cat(
            [
                model.encode(x[s : s + batch_size], c[s : s + batch_size])[0]
                for s in range(0, len(x), batch_size)
            ]
        )
        codes = _finite_codes(mu, "the posterior means model.encode gave for x")
        return cls.fit_codes(codes, labels, num_classes, components, seed)

    def sample(
        self, labels: torch.Tensor, generator: torch.Generator, temperature: float = 1.0
    ) -> torch.Tensor:
        """z (N, L) for classes ``labels`` (N,): a component of each class's mixture, then a
        draw from it with its spread scaled by ``temperature`` (a finite number > 0)."""
        temperature = _temperature(temperature)
        labels = _class_labels(labels, self.means.shape[0], None).cpu()
        pick = torch.multinomial(self.weights[labels], 1, generator=generator).squeeze(1)
        eps = torch.randn(len(labels), self.means.shape[-1], 1, generator=generator)
        noise = (self.chol[labels, pick] @ eps).squeeze(-1)
        z = self.means[labels, pick] + temperature * noise
        bad = int((~torch.isfinite(z)).any(1).sum())
        if bad:
            raise PipelineError(
                f"temperature={temperature:g}: {bad} of {_count(len(z), 'sample')} came out NaN "
                "or inf (the mixtures' spread times the temperature overflows float32); "
                "lower the temperature"
            )
        return z

    @torch.no_grad()
    def decode(
        self,
        model: torch.nn.Module,
        labels: torch.Tensor,
        generator: torch.Generator,
        temperature: float = 1.0,
        batch_size: int = 1000,
    ) -> torch.Tensor:
        """Images (N, 784) in [0, 1]: ``model.decode`` of z drawn for each label."""
        batch_size = _positive_int(batch_size, "batch_size")
        model.eval()
        z = self.sample(labels, generator, temperature)
        c = F.one_hot(torch.as_tensor(labels).long().cpu(), self.means.shape[0]).float()
        return torch.cat(
            [
                model.decode(z[s : s + batch_size], c[s : s + batch_size])
                for s in range(0, len(z), batch_size)
            ]
        )

    def save(self, path: str | Path) -> str:
        """Write the mixtures to the safetensors file ``path`` atomically; its sha256 (hex)."""
        path = Path(path)
        tensors = {
            name: value.detach().cpu().float().contiguous().clone()
            for name, value in zip(TENSORS, (self.weights, self.means, self.chol), strict=True)
        }
        problem = mixture_problem(*tensors.values())
        if problem is not None:
            raise PipelineError(f"{path}: not written: {problem}")
        classes, components, latent_dim = tensors["means"].shape
        meta = DensityMeta(
            format=FORMAT, classes=classes, components=components, latent_dim=latent_dim
        )
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"meta": meta.model_dump_json()})
            digest = sha256_file(tmp)
        return digest

    @classmethod
    def load(cls, path: str | Path, sha256: str | None = None) -> ExPostDensity:
        """The mixtures ``save`` wrote to ``path``, each checked (module docstring); with
        ``sha256``, the file must hash to it."""
        path = Path(path)
        if path.is_symlink():
            raise PipelineError(f"{path}: a symbolic link; expected the density file itself")
        if not path.is_file():
            raise PipelineError(f"{path}: missing; fit the density and save it first")
        data = path.read_bytes()  # hashed and parsed from the same bytes
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise PipelineError(
                f"{path}: sha256 {hashlib.sha256(data).hexdigest()} is not the expected "
                f"{sha256}; the file changed since it was saved"
            )
        tensors, meta = _read(path, data)
        want = {
            "weights": (meta.classes, meta.components),
            "means": (meta.classes, meta.components, meta.latent_dim),
            "chol": (meta.classes, meta.components, meta.latent_dim, meta.latent_dim),
        }
        for name, shape in want.items():
            if tuple(tensors[name].shape) != shape or tensors[name].dtype != torch.float32:
                raise PipelineError(
                    f"{path}: tensor {name} is {tensors[name].dtype} of shape "
                    f"{list(tensors[name].shape)}; its metadata gives float32 of {list(shape)}"
                )
        problem = mixture_problem(tensors["weights"], tensors["means"], tensors["chol"])
        if problem is not None:
            raise PipelineError(f"{path}: {problem}; fit the density and save it again")
        return cls(tensors["weights"], tensors["means"], tensors["chol"])


def _read(path: Path, data: bytes) -> tuple[dict[str, torch.Tensor], DensityMeta]:
    """The tensors and the metadata of a safetensors file's bytes, or one line naming ``path``."""
    try:
        tensors = load_safetensors(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    except (SafetensorError, ValueError) as exc:  # truncated or not safetensors
        raise PipelineError(f"{path}: not a readable safetensors file ({exc})") from None
    names = sorted(tensors)
    if names != sorted(TENSORS):
        raise PipelineError(f"{path}: holds tensors {names}; expected {sorted(TENSORS)}")
    stored = header.get("__metadata__") or {}
    if sorted(stored) != ["meta"]:
        raise PipelineError(
            f"{path}: holds metadata keys {sorted(stored)}; expected ['meta'], the metadata of "
            "an ex-post density file"
        )
    try:
        meta = DensityMeta.model_validate_json(stored["meta"])
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(all)"
        got = "missing" if first["type"] == "missing" else f"got {str(first['input'])[:80]!r}"
        raise PipelineError(
            f"{path}: metadata meta, key {key}: {first['msg']} ({got}); expected the metadata "
            f"of an ex-post density file ({', '.join(DensityMeta.model_fields)})"
        ) from None
    return tensors, meta


DENSITY_FILE = "density.safetensors"  # beside model.safetensors (stages/train.py writes it)


def saved_density(model_dir: str | Path, meta, latent_dim: int, classes: int) -> ExPostDensity:
    """The ex-post density saved beside the model in ``model_dir``, checked against what its
    config.json (``meta``, a checkpoint.SavedMeta) records: the sha256, the components, and the
    model's ``latent_dim`` and ``classes``. A model without one is one line saying so."""
    config = Path(model_dir) / "config.json"
    if not meta.has_density:
        raise PipelineError(
            f"{config}: no ex-post density (no density_sha256); sampler expost needs one: give "
            "the model's entry an expost section and train it again, or use sampler prior"
        )
    path = Path(model_dir) / DENSITY_FILE
    density = ExPostDensity.load(path, sha256=meta.density_sha256)
    classes_, components, latent = density.means.shape
    if (classes_, components, latent) != (classes, meta.density_components, latent_dim):
        raise PipelineError(
            f"{path}: holds {classes_} classes x {components} components over {latent}-d codes; "
            f"{config} gives {classes} x {meta.density_components} over {latent_dim}-d"
        )
    return density


def one_hot_labels(conditions: torch.Tensor) -> torch.Tensor:
    """The class of each one-hot row of ``conditions``: what the ex-post density samples for.
    A row that is not one-hot (a caption embedding, the null condition) is one line."""
    ones = (conditions == 1).sum(1)
    if not bool(((ones == 1) & (conditions.abs().sum(1) == 1)).all()):
        raise PipelineError(
            "sampler expost: expected one-hot class conditions (a label model); the ex-post "
            "density draws z per class"
        )
    return conditions.argmax(1)
