"""Ex-post latent density (pipeline/latent_density.py): the EM fit of the mixtures, their
samples, decoding a CVAE's samples from them on real Fashion-MNIST images, one line for every
degenerate input, and the saved file: round trip, tampering and a wrong sha256 refused."""

import hashlib
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pipeline.data.fmnist import load_tensors
from pipeline.data.fmnist_download import fetch_fmnist
from pipeline.errors import PipelineError
from pipeline.hashing import sha256_file
from pipeline.latent_density import FORMAT, ExPostDensity, gaussian_mixture

from .conftest import tiny_prior


def two_classes(n: int = 4000):
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([3.0, -1.0]) + torch.randn(n, 2, generator=g) * torch.tensor([2.0, 0.5])
    b = torch.tensor([-2.0, 2.0]) + torch.randn(n, 2, generator=g)
    return torch.cat([a, b]), torch.cat(
        [torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)]
    )


def refused(excinfo, *parts: str) -> str:
    """The message of a raised PipelineError: one line holding every part."""
    message = str(excinfo.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message
    return message


def test_one_component_is_each_class_gaussian_and_its_samples_follow_it():
    codes, labels = two_classes()
    density = ExPostDensity.fit_codes(codes, labels, num_classes=2, components=1, seed=0)
    for k in (0, 1):
        rows = codes[labels == k].double()
        assert torch.allclose(density.means[k, 0].double(), rows.mean(0), atol=1e-5)
        cov = density.chol[k, 0].double() @ density.chol[k, 0].double().T
        biased = torch.cov(rows.T, correction=0)  # the mixture's maximum-likelihood covariance
        assert torch.allclose(cov, biased, atol=1e-4)
    draws = density.sample(torch.zeros(40000, dtype=torch.long), torch.Generator().manual_seed(1))
    assert torch.allclose(draws.mean(0), torch.tensor([3.0, -1.0]), atol=0.05)
    assert torch.allclose(draws.std(0), torch.tensor([2.0, 0.5]), rtol=0.05)


def test_em_recovers_a_known_two_component_mixture():
    g = torch.Generator().manual_seed(0)
    skew = torch.tensor([[1.0, 0.5], [0.0, 0.3]])  # rows: x @ skew has covariance skew^T skew
    a = torch.randn(6000, 2, generator=g) * 0.5 + torch.tensor([4.0, 0.0])
    b = torch.randn(2000, 2, generator=g) @ skew + torch.tensor([-4.0, 2.0])
    weights, means, chol = gaussian_mixture(torch.cat([a, b]), components=2, seed=0)
    order = means[:, 0].argsort(descending=True)  # component of a first
    weights, means, cov = weights[order], means[order], (chol @ chol.transpose(1, 2))[order]
    assert torch.allclose(weights, torch.tensor([0.75, 0.25], dtype=torch.float64), atol=1e-6)
    # Well apart (8 standard deviations), each component is its cluster's ML Gaussian.
    for k, rows in enumerate((a.double(), b.double())):
        assert torch.allclose(means[k], rows.mean(0), atol=1e-6)
        assert torch.allclose(cov[k], torch.cov(rows.T, correction=0), atol=1e-5)
    assert torch.allclose(cov[1], (skew.T @ skew).double(), atol=0.05)


def test_sampling_is_seeded_and_a_cold_temperature_gives_the_component_means():
    codes, labels = two_classes(600)
    density = ExPostDensity.fit_codes(codes, labels, num_classes=2, components=3, seed=0)
    want = torch.tensor([0, 1, 1, 0])
    a = density.sample(want, torch.Generator().manual_seed(5))
    assert torch.equal(a, density.sample(want, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, density.sample(want, torch.Generator().manual_seed(6)))
    cold = density.sample(want, torch.Generator().manual_seed(5), temperature=1e-6)
    for row, k in zip(cold, want, strict=True):  # within 1e-4 of one of class k's means
        assert ((density.means[k] - row).abs().max(1).values < 1e-4).any()


# Degenerate input: one line naming the argument (each of these failed before the checks).


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_codes_are_refused_with_how_many_rows(bad):
    codes, labels = two_classes(600)
    codes[[3, 700]] = bad
    codes[700, 1] = 0.0  # a row with one bad entry is a bad row
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.fit_codes(codes, labels, num_classes=2, components=2, seed=0)
    refused(excinfo, "codes: 2 of 1200 rows hold NaN or inf")


@pytest.mark.parametrize("components", [0, -1, 2.5, True])
def test_components_below_one_are_refused(components):
    codes, labels = two_classes(100)
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.fit_codes(codes, labels, num_classes=2, components=components, seed=0)
    refused(excinfo, "components: expected an integer >= 1", repr(components))


@pytest.mark.parametrize("bad", [-1, 7, 3])
def test_a_label_outside_the_classes_is_refused_by_name(bad):
    codes, labels = two_classes(100)
    labels = labels.clone()
    labels[150] = bad  # 3 classes: 0, 1, 2
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.fit_codes(codes, labels, num_classes=3, components=1, seed=0)
    refused(excinfo, f"labels: label {bad} (row 150,", "expected integers in [0, 3)")


def test_labels_must_be_integers_one_per_code():
    codes, labels = two_classes(100)
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.fit_codes(codes, labels.float(), num_classes=2, components=1, seed=0)
    refused(excinfo, "labels: expected integer class indices, got torch.float32")
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.fit_codes(codes, labels[:-1], num_classes=2, components=1, seed=0)
    refused(excinfo, "labels: expected shape (200,), one per row, got [199]")


def test_a_class_with_fewer_codes_than_components_is_refused_and_as_many_is_fitted():
    codes, labels = two_classes(600)
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.fit_codes(codes, labels, num_classes=3, components=2, seed=0)
    refused(excinfo, "components=2: class 2 has 0 codes;", "lower components")
    few = torch.cat([codes[:3], codes[600:610]])  # class 0: 3 codes, class 1: 10
    few_labels = torch.tensor([0] * 3 + [1] * 10)
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.fit_codes(few, few_labels, num_classes=2, components=4, seed=0)
    refused(excinfo, "components=4: class 0 has 3 codes;")
    # As many codes as components (even all equal) is a mixture: each code a component.
    exact = torch.cat([codes[:3], codes[600:603], codes[600:601].expand(3, 2)])
    exact_labels = torch.tensor([0] * 3 + [1] * 3 + [2] * 3)
    density = ExPostDensity.fit_codes(exact, exact_labels, num_classes=3, components=3, seed=0)
    for k in (0, 1):
        found = torch.tensor(sorted(density.means[k].tolist()))
        assert torch.allclose(found, torch.tensor(sorted(exact[3 * k : 3 * k + 3].tolist())))
    draws = density.sample(torch.tensor([0, 1, 2] * 100), torch.Generator().manual_seed(0))
    assert torch.isfinite(draws).all()
    assert torch.allclose(draws[2::3], codes[600].expand(100, 2), atol=1e-3)


def test_collinear_and_constant_codes_at_large_scale_fit_and_sample_finite_values():
    g = torch.Generator().manual_seed(0)
    line = torch.randn(600, 1, generator=g) @ torch.randn(1, 4, generator=g)  # rank 1
    labels = torch.arange(600) % 3
    small = ExPostDensity.fit_codes(line, labels, num_classes=3, components=2, seed=0)
    big = ExPostDensity.fit_codes(1e6 * line, labels, num_classes=3, components=2, seed=0)
    # Regularised relative to the codes' scale: the same mixture, scaled by 1e6.
    assert torch.allclose(big.weights, small.weights, atol=1e-5)
    assert torch.allclose(big.means / 1e6, small.means, rtol=1e-4, atol=1e-5)
    assert torch.allclose(big.chol / 1e6, small.chol, rtol=1e-3, atol=1e-5)
    draws = big.sample(labels, torch.Generator().manual_seed(1))
    assert torch.isfinite(draws).all() and draws.abs().max() > 1e5
    constant = torch.full((300, 4), 1e6)
    flat = ExPostDensity.fit_codes(constant, labels[:300], num_classes=3, components=2, seed=0)
    draws = flat.sample(labels, torch.Generator().manual_seed(1))
    assert torch.isfinite(draws).all() and torch.allclose(draws, constant[:1], rtol=1e-6)
    zeros = ExPostDensity.fit_codes(0 * constant, labels[:300], 3, 2, seed=0)
    assert torch.isfinite(zeros.sample(labels, torch.Generator())).all()


@pytest.mark.parametrize("temperature", [math.nan, math.inf, -math.inf, 0.0, -1.0, "warm"])
def test_sampling_refuses_a_temperature_that_is_not_a_finite_positive_number(temperature):
    codes, labels = two_classes(100)
    density = ExPostDensity.fit_codes(codes, labels, num_classes=2, components=1, seed=0)
    with pytest.raises(PipelineError) as excinfo:
        density.sample(labels, torch.Generator(), temperature=temperature)
    refused(excinfo, "temperature: expected a finite number > 0", repr(temperature))


def test_a_sample_that_overflows_is_refused_not_returned():
    codes, labels = two_classes(100)
    density = ExPostDensity.fit_codes(1e37 * codes, labels, num_classes=2, components=1, seed=0)
    assert torch.isfinite(density.sample(labels, torch.Generator())).all()
    with pytest.raises(PipelineError) as excinfo:
        density.sample(labels, torch.Generator(), temperature=1e3)
    refused(excinfo, "temperature=1000: ", "of 200 samples came out NaN or inf")


def test_sampling_refuses_a_label_outside_the_classes():
    codes, labels = two_classes(100)
    density = ExPostDensity.fit_codes(codes, labels, num_classes=2, components=1, seed=0)
    with pytest.raises(PipelineError) as excinfo:
        density.sample(torch.tensor([0, 1, 2]), torch.Generator())
    refused(excinfo, "labels: label 2 (row 2,", "[0, 2)")


def test_fitting_a_model_checks_its_labels_and_its_posterior_means():
    torch.manual_seed(0)
    model = tiny_prior(latent_dim=4, prior="standard")
    x, y = torch.rand(40, 784), torch.arange(40) % 10
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.fit(model, x, torch.where(y == 9, -1, y), num_classes=10, components=1)
    refused(excinfo, "labels: label -1 (row 9,")
    x[5, 100] = math.nan  # a NaN pixel: the encoder's mean of that image is NaN
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.fit(model, x, y, num_classes=10, components=1)
    refused(excinfo, "the posterior means model.encode gave for x: 1 of 40 rows hold NaN")


def test_fits_posterior_means_of_a_cvae_and_decodes_images(tmp_path, fmnist_gz_dir):
    raw = tmp_path / "raw"
    fetch_fmnist(raw, source="local", local_dir=str(fmnist_gz_dir))
    x, y = load_tensors(raw, "train", 1000)
    torch.manual_seed(0)
    model = tiny_prior(latent_dim=4, prior="standard", arch="conv")
    density = ExPostDensity.fit(model, x, y, num_classes=10, components=1, seed=0)
    mu, _ = model.eval().encode(x, F.one_hot(y, 10).float())
    for k in range(10):
        assert torch.allclose(density.means[k, 0], mu[y == k].mean(0), atol=1e-5)
    labels = torch.arange(10).repeat_interleave(3)
    images = density.decode(model, labels, torch.Generator().manual_seed(0), batch_size=7)
    assert images.shape == (30, 784) and torch.isfinite(images).all()
    assert images.min() >= 0 and images.max() <= 1


# The saved file.


def saved(tmp_path):
    codes, labels = two_classes(300)
    codes = torch.cat([codes, codes.flip(1)], 1)  # L = 4
    density = ExPostDensity.fit_codes(codes, labels, num_classes=2, components=3, seed=0)
    path = tmp_path / "density.safetensors"
    return density, path, density.save(path)


def test_save_and_load_round_trip_gives_the_same_samples(tmp_path):
    density, path, sha = saved(tmp_path)
    assert sha == sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["density.safetensors"]  # no temp left
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert list(meta) == ["meta"]
    assert json.loads(meta["meta"]) == {
        "format": FORMAT,
        "classes": 2,
        "components": 3,
        "latent_dim": 4,
    }
    for loaded in (ExPostDensity.load(path), ExPostDensity.load(str(path), sha256=sha)):
        for name in ("weights", "means", "chol"):
            assert torch.equal(getattr(loaded, name), getattr(density, name))
        labels = torch.tensor([0, 1] * 50)
        want = density.sample(labels, torch.Generator().manual_seed(3), temperature=0.7)
        got = loaded.sample(labels, torch.Generator().manual_seed(3), temperature=0.7)
        assert torch.equal(got, want)
    assert density.save(path) == sha  # the same mixtures: the same bytes


def test_a_changed_byte_fails_the_sha256(tmp_path):
    _, path, sha = saved(tmp_path)
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    start = json.loads(data[8 : 8 + size])["means"]["data_offsets"][0]
    data[8 + size + start] ^= 0x01  # the lowest bit of the first mean: still a valid density
    path.write_bytes(bytes(data))
    ExPostDensity.load(path)  # without the hash, nothing tells
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.load(path, sha256=sha)
    refused(excinfo, f"{path}: sha256 ", f"is not the expected {sha}")


def _rewrite(path, tensors, meta):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def _edit(name):
    def edit(t, m):
        if name == "weights":
            t["weights"][1] *= 0.5
        elif name == "negative":
            t["weights"][0] = torch.tensor([1.5, -0.25, -0.25])
        elif name == "upper":
            t["chol"][1, 2, 0, 3] = 1e-3
        elif name == "diagonal":
            t["chol"][0, 1, 2, 2] *= -1
        elif name == "nan":
            t["means"][1, 0, 0] = math.nan
        elif name == "shape":
            m["components"] = 4
        elif name == "format":
            m["format"] = "something else"
        elif name == "no key":
            del m["latent_dim"]
        elif name == "string":
            m["classes"] = "2"
        elif name == "extra":
            t["extra"] = torch.zeros(1)
        elif name == "dtype":
            t["means"] = t["means"].double()

    return edit


TAMPERED = {
    "weights": "the weights of class 1 sum to 0.5 ",
    "negative": "the weights of class 0 sum to 1 or hold a negative one",
    "upper": "the Cholesky factor of class 1, component 2 is not lower-triangular",
    "diagonal": "the Cholesky factor of class 0, component 1 is not lower-triangular with a "
    "positive diagonal",
    "nan": "tensor means holds NaN or inf",
    "shape": "tensor weights is torch.float32 of shape [2, 3]; its metadata gives float32 of "
    "[2, 4]",
    "format": "metadata meta, key format: Input should be 't2i-cvae ex-post density'",
    "no key": "metadata meta, key latent_dim: Field required (missing)",
    "string": "metadata meta, key classes: Input should be a valid integer (got '2')",
    "extra": "holds tensors ['chol', 'extra', 'means', 'weights']; expected ['chol', 'means',",
    "dtype": "tensor means is torch.float64 of shape [2, 3, 4]; its metadata gives float32",
}


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_a_tampered_file_is_refused_naming_it_and_the_problem(tmp_path, name):
    _, path, _ = saved(tmp_path)
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["meta"])
    _edit(name)(tensors, meta)
    _rewrite(path, tensors, {"meta": json.dumps(meta)})
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.load(path)
    assert refused(excinfo, TAMPERED[name]).startswith(f"{path}: ")


def test_a_file_that_is_not_a_density_is_refused(tmp_path):
    _, path, _ = saved(tmp_path)
    data = path.read_bytes()
    for broken in (data[: len(data) // 2], b"", b"not safetensors at all"):
        path.write_bytes(broken)
        with pytest.raises(PipelineError) as excinfo:
            ExPostDensity.load(path)
        refused(excinfo, f"{path}: not a readable safetensors file (")
    path.unlink()
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.load(path)
    refused(excinfo, f"{path}: missing")
    real = tmp_path / "real.safetensors"
    path.symlink_to(real)
    ExPostDensity.fit_codes(*two_classes(50), num_classes=2, components=1, seed=0).save(real)
    ExPostDensity.load(real)
    with pytest.raises(PipelineError) as excinfo:
        ExPostDensity.load(path)
    refused(excinfo, f"{path}: a symbolic link")


def test_non_finite_mixtures_are_never_written(tmp_path):
    density, path, _ = saved(tmp_path)
    before = path.read_bytes()
    density.means[0, 0, 0] = math.nan
    with pytest.raises(PipelineError) as excinfo:
        density.save(path)
    refused(excinfo, f"{path}: not written: tensor means holds NaN or inf")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["density.safetensors"]
