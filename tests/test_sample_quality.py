"""FID, KID and the CLIP scores of caption-only samples (pipeline/sample_quality.py,
pipeline/clip_metrics.py)."""

import hashlib
import subprocess
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image

from pipeline.clip_metrics import ClipScorer, clip_s, clipscore_100, pair_cosines, r_precision
from pipeline.config import ClipScoreParams
from pipeline.errors import PipelineError
from pipeline.sample_quality import (
    fetch_inception,
    fid_kid,
    inception_features,
    load_inception,
    score_caption_only,
    to_uint8,
    weights_hash_prefix,
)

from .conftest import repo_params, run_env
from .encoder_fixtures import make_random_inception, make_tiny_clip

CPU = torch.device("cpu")


def coco_evaluate(**fields):
    """The coco_clip entry's evaluate section of params.yaml, with ``fields`` changed."""
    from pipeline.config import EvaluateCoco

    return EvaluateCoco(**{**repo_params()["models"]["coco_clip"]["evaluate"], **fields})


def clip_score(**fields) -> dict:
    """params.yaml's clip_score section of coco_clip, with ``fields`` changed."""
    return {**repo_params()["models"]["coco_clip"]["evaluate"]["clip_score"], **fields}


@pytest.fixture(scope="session")
def inception_file(tmp_path_factory):
    return make_random_inception(tmp_path_factory.mktemp("inception") / "inception.pth")


@pytest.fixture(scope="session")
def inception(inception_file):
    return load_inception(str(inception_file), "models.coco_clip.evaluate.inception_weights", CPU)


def photos(seed: int, n: int = 8, size: int = 32, high: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_fid_of_a_set_against_itself_is_about_zero(inception):
    real = inception_features(inception, photos(0), 4, CPU)
    assert real.shape == (8, 2048) and real.std(0).mean() > 0.1  # features that vary
    same = fid_kid(real, real, kid_subsets=20, kid_subset_size=4, seed=0)
    dark = inception_features(inception, photos(1, high=60), 4, CPU)
    other = fid_kid(real, dark, kid_subsets=20, kid_subset_size=4, seed=0)
    assert other["fid"] > 1.0
    assert abs(same["fid"]) < 1e-6 * other["fid"]
    assert abs(same["kid_mean"]) < 1e-2 * other["kid_mean"]
    assert other["kid_subset_size"] == 4 and other["kid_subsets"] == 20


def test_fid_grows_with_the_gap_and_is_symmetric(inception):
    real = inception_features(inception, photos(0), 8, CPU)
    near = inception_features(inception, photos(2, high=230), 8, CPU)
    far = inception_features(inception, photos(3, high=60), 8, CPU)
    score = lambda a, b: fid_kid(a, b, kid_subsets=5, kid_subset_size=4, seed=0)["fid"]  # noqa: E731
    assert 0 < score(real, near) < score(real, far)
    assert score(real, far) == pytest.approx(score(far, real), rel=1e-6)


def test_features_do_not_depend_on_the_batch_size(inception):
    images = photos(4, n=5)
    one = inception_features(inception, images, 5, CPU)
    two = inception_features(inception, images, 2, CPU)
    assert torch.allclose(one, two, atol=1e-4, rtol=1e-4)


def test_kid_is_seeded_and_caps_the_subset_size(inception):
    a = inception_features(inception, photos(5, n=6), 6, CPU)
    b = inception_features(inception, photos(6, n=6, high=120), 6, CPU)
    first = fid_kid(a, b, kid_subsets=10, kid_subset_size=1000, seed=3)
    again = fid_kid(a, b, kid_subsets=10, kid_subset_size=1000, seed=3)
    assert first == again and first["kid_subset_size"] == 6


def test_fid_needs_two_images_a_side(inception):
    one = inception_features(inception, photos(0, n=1), 1, CPU)
    with pytest.raises(PipelineError, match="at least 2"):
        fid_kid(one, one, kid_subsets=1, kid_subset_size=2, seed=0)


def test_missing_or_wrong_inception_weights_name_the_key(tmp_path):
    key = "models.coco_t5.evaluate.inception_weights"
    with pytest.raises(PipelineError, match=rf"{key}: no Inception weights file at .*nope.pth"):
        load_inception(str(tmp_path / "nope.pth"), key, CPU)
    with pytest.raises(PipelineError, match=rf"{key} is null"):
        load_inception(None, key, CPU)
    junk = tmp_path / "junk.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, junk)
    with pytest.raises(PipelineError, match=rf"{key}: .*junk.pth is not torch-fidelity"):
        load_inception(str(junk), key, CPU)


def test_to_uint8_round_trips_decoded_pixels():
    pixels = photos(7, n=2)
    assert torch.equal(to_uint8(pixels.float() / 255), pixels)


@pytest.fixture(scope="module")
def clip_scorer(tmp_path_factory):
    spec = ClipScoreParams(**clip_score(**make_tiny_clip(tmp_path_factory.mktemp("clip"))))
    return ClipScorer(spec, "models.coco_clip.evaluate.clip_score.weights", CPU), spec


def test_clip_score_matches_open_clip_one_pair_at_a_time(clip_scorer):
    scorer, spec = clip_scorer
    images = photos(8, n=5).float() / 255
    captions = ["a cat", "two dogs on a sofa", "", "a red bus ☺", "an orange"]
    batched = 100 * pair_cosines(
        scorer.image_embeddings(images, batch_size=2), scorer.text_embeddings(captions, 3)
    )

    # The reference: open_clip's own model + eval transform, one PIL image and caption at a time.
    model, _, preprocess = open_clip.create_model_and_transforms(
        spec.model, pretrained=spec.weights
    )
    tokenizer = open_clip.get_tokenizer(spec.model)
    for i, caption in enumerate(captions):
        pil = Image.fromarray(to_uint8(images[i]).permute(1, 2, 0).numpy())
        with torch.no_grad():
            e_i = model.encode_image(preprocess(pil)[None])
            e_t = model.encode_text(tokenizer([caption]))
        expected = 100 * torch.nn.functional.cosine_similarity(e_i, e_t).item()
        assert batched[i].item() == pytest.approx(expected, abs=1e-3)


def test_clip_s_is_hessels_per_pair_clamp_times_2_5_and_clipscore_100_is_torchmetrics():
    e_image = torch.tensor([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0]])
    e_text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.6, 0.8]])  # cosines 1, 0.8, -0.6
    assert pair_cosines(e_image, e_text).tolist() == pytest.approx([1.0, 0.8, -0.6])
    # each pair clamped at 0 before the mean: (1 + 0.8 + 0) / 3, not max(mean, 0) = 0.4
    assert clip_s(e_image, e_text) == pytest.approx(2.5 * 1.8 / 3)
    assert clipscore_100(e_image, e_text) == pytest.approx(100 * 1.8 / 3)
    assert clip_s(e_image[2:], e_text[2:]) == 0.0 == clipscore_100(e_image[2:], e_text[2:])


def test_clipscore_100_matches_torchmetrics_formula_on_known_embeddings():
    g = torch.Generator().manual_seed(0)
    e_image = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=-1)
    e_text = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=-1)
    cos = torch.nn.functional.cosine_similarity(e_image, e_text)
    # torchmetrics.functional.multimodal.clip_score: 100 * cosine, clamped at 0 per pair
    assert clipscore_100(e_image, e_text) == pytest.approx(float((100 * cos).clamp(min=0).mean()))
    assert clip_s(e_image, e_text) == pytest.approx(clipscore_100(e_image, e_text) / 40)


def test_r_precision_is_one_for_matched_pairs_and_near_chance_for_noise():
    g = torch.Generator().manual_seed(1)
    captions = torch.nn.functional.normalize(torch.randn(300, 32, generator=g), dim=-1)
    perfect = r_precision(captions, captions, draws=3, seed=0)
    assert perfect == {"value": 1.0, "std": 0.0, "draws": 3, "candidates": 100}
    noise = torch.nn.functional.normalize(torch.randn(300, 32, generator=g), dim=-1)
    chance = r_precision(noise, captions, draws=20, seed=0)
    assert 0.0 <= chance["value"] < 0.05 and chance["std"] >= 0  # chance is 1 in 100
    again = [r_precision(noise, captions, draws=4, seed=5) for _ in range(2)]
    assert again[0] == again[1]  # seeded


def test_r_precision_counts_a_known_rank_and_uses_fewer_candidates_when_few_captions():
    # image i is closest to caption i except image 0, which is closer to caption 1
    e_text = torch.eye(4)
    e_image = torch.eye(4).clone()
    e_image[0] = torch.nn.functional.normalize(torch.tensor([0.6, 0.8, 0.0, 0.0]), dim=0)
    out = r_precision(e_image, e_text, draws=2, seed=0)
    assert out["candidates"] == 4 and out["value"] == 0.75  # every caption is in every draw


def test_clip_score_conditions_name_the_weights(clip_scorer):
    scorer, spec = clip_scorer
    conditions = scorer.conditions(12, 32)
    sha = hashlib.sha256(Path(spec.weights).read_bytes()).hexdigest()
    assert conditions["weights_sha256"] == sha and conditions["samples"] == 12
    assert conditions["image_size"] == 32 and "open_clip" in conditions["tool"]
    assert conditions["model"] == "tiny-clip"


def tensors_file_bytes(tmp_path) -> bytes:
    path = tmp_path / "plain.pth"
    torch.save({"fc.weight": torch.arange(6.0).reshape(2, 3)}, path)
    return path.read_bytes()


def test_fetch_inception_checks_the_hash_in_the_name(http_server, tmp_path):
    body = tensors_file_bytes(tmp_path)
    prefix = hashlib.sha256(body).hexdigest()[:8]
    http_server.routes[f"/w/inception-{prefix}.pth"] = [(503, b"busy"), (200, body)]
    http_server.routes["/w/inception-deadbeef.pth"] = [(200, body)]
    assert weights_hash_prefix(f"{http_server.url}/w/inception-{prefix}.pth") == prefix

    dest = tmp_path / "weights" / "inception.pth"
    run = subprocess.run(
        [
            "t2i",
            "weights",
            "inception",
            "--dest",
            str(dest),
            "--url",
            f"{http_server.url}/w/inception-{prefix}.pth",
        ],
        env=run_env(),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert dest.read_bytes() == body  # after one retry of the 503

    bad = tmp_path / "bad.pth"
    with pytest.raises(PipelineError, match="does not match deadbeef; nothing was written"):
        fetch_inception(bad, f"{http_server.url}/w/inception-deadbeef.pth", backoff_s=0.01)
    assert list(tmp_path.glob("*bad*")) == []  # nothing half-written
    with pytest.raises(PipelineError, match="could not be downloaded.*HTTP 404"):
        fetch_inception(bad, f"{http_server.url}/w/missing-0badf00d.pth", backoff_s=0.01)


def test_fetch_inception_always_checks_a_sha256(http_server, tmp_path):
    body = tensors_file_bytes(tmp_path)
    http_server.routes["/w/inception.pth"] = [(200, body)]
    dest = tmp_path / "inception.pth"
    with pytest.raises(PipelineError, match="no sha256 to check it against; pass --sha256"):
        fetch_inception(dest, f"{http_server.url}/w/inception.pth")
    assert http_server.hits == {} and not dest.exists()  # refused before any byte is fetched
    with pytest.raises(PipelineError, match=r"sha256 [0-9a-f]{64} does not match 0{64}"):
        fetch_inception(dest, f"{http_server.url}/w/inception.pth", "0" * 64)
    assert not dest.exists()
    sha = hashlib.sha256(body).hexdigest()
    assert fetch_inception(dest, f"{http_server.url}/w/inception.pth", sha).read_bytes() == body


class _Payload:
    """Unpickling this runs Path.touch(marker): what a planted weights file could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_payload_at_the_weights_path_is_refused_without_running(tmp_path, http_server):
    marker = tmp_path / "payload-ran"
    planted = tmp_path / "weights" / "planted.pth"
    planted.parent.mkdir()
    torch.save({"fc.weight": torch.zeros(2), "x": _Payload(marker)}, planted)
    key = "models.coco_clip.evaluate.inception_weights"
    with pytest.raises(
        PipelineError,
        match=rf"{key}: .*planted.pth holds more than plain "
        r"tensors and is refused unread \(no pickle is run\)",
    ):
        load_inception(str(planted), key, CPU)
    assert not marker.exists()

    # The stage leaves FID and KID absent with that reason, and still runs nothing.
    p = coco_evaluate(inception_weights=str(planted), clip_score=clip_score(weights=None))
    images = photos(0, n=4).float() / 255
    out = score_caption_only(p, "models.coco_clip.evaluate", images, images, ["a"] * 4, CPU, 32)
    assert out["fid"]["value"] is None and "refused unread" in out["fid"]["absent"]
    assert not marker.exists()

    # Nor is such a file kept by `t2i weights inception`, even with the right sha256.
    body = planted.read_bytes()
    http_server.routes["/w/planted.pth"] = [(200, body)]
    dest = tmp_path / "fetched.pth"
    with pytest.raises(PipelineError, match="refused unread"):
        fetch_inception(dest, f"{http_server.url}/w/planted.pth", hashlib.sha256(body).hexdigest())
    assert not dest.exists() and not marker.exists()


def test_a_file_named_as_the_official_weights_must_have_their_sha256(tmp_path, inception_file):
    from pipeline.sample_quality import INCEPTION_FILE, INCEPTION_SHA256

    assert INCEPTION_FILE.split("-")[-1].split(".")[0] == INCEPTION_SHA256[:8]
    impostor = tmp_path / INCEPTION_FILE
    impostor.write_bytes(inception_file.read_bytes())  # loadable weights, not the official ones
    with pytest.raises(
        PipelineError,
        match=rf"has sha256 [0-9a-f]{{64}}, not that of "
        rf"torch-fidelity's file \({INCEPTION_SHA256}\)",
    ):
        load_inception(str(impostor), "models.coco_t5.evaluate.inception_weights", CPU)
    net = load_inception(str(inception_file), "models.coco_t5.evaluate.inception_weights", CPU)
    assert sum(p.numel() for p in net.parameters()) > 20_000_000  # any other name: loaded


def test_truncated_inception_weights_are_one_line(tmp_path, inception_file):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(inception_file.read_bytes()[:100_000])
    with pytest.raises(PipelineError, match=r"cut.pth is not a readable weights file") as info:
        load_inception(str(cut), "models.coco_clip.evaluate.inception_weights", CPU)
    assert "\n" not in str(info.value)


def test_the_stage_scores_samples_and_leaves_null_weights_absent(inception_file, clip_scorer):
    _, clip = clip_scorer
    real, fake = photos(9, n=6).float() / 255, photos(10, n=6, high=120).float() / 255
    captions = [f"photo number {i}" for i in range(6)]
    p = coco_evaluate(inception_weights=str(inception_file), clip_score=clip, kid_subsets=4)
    out = score_caption_only(p, "models.coco_clip.evaluate", real, fake, captions, CPU, 32)
    assert out["fid"]["value"] > out["fid"]["real_half_vs_half"] > 0  # 3 real against 3 real
    assert out["kid"]["conditions"]["kid_subset_size"] == 6
    assert out["fid"]["conditions"]["samples"] == 6 and out["fid"]["conditions"]["image_size"] == 32
    # The scores of the samples' own CLIP embeddings against their captions' (cosines here):
    # CLIPScore = mean of 100 * max(cos, 0), CLIP-S = 2.5 / 100 of it.
    scorer = ClipScorer(clip, "models.coco_clip.evaluate.clip_score.weights", CPU)
    e_image, e_text = scorer.image_embeddings(fake, 32), scorer.text_embeddings(captions, 32)
    cos = torch.nn.functional.cosine_similarity(e_image, e_text)
    expected = float((100 * cos.clamp(min=0)).mean())
    assert out["clipscore_100"]["value"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert out["clip_s"]["value"] == pytest.approx(out["clipscore_100"]["value"] / 40)
    r = out["clip_r_precision"]
    assert r["candidates"] == 6 and r["draws"] == 5
    again = r_precision(e_image, e_text, candidates=100, draws=5, seed=p.seed)
    assert (r["value"], r["std"]) == pytest.approx((again["value"], again["std"]))
    assert out["clip_s"]["conditions"]["model"] == "tiny-clip"

    p = coco_evaluate(inception_weights=None, clip_score={**clip.model_dump(), "weights": None})
    out = score_caption_only(p, "models.coco_t5.evaluate", real, fake, captions, CPU, 32)
    assert out["fid"] == {**out["fid"], "value": None}
    assert (
        out["fid"]["absent"]
        == "models.coco_t5.evaluate.inception_weights is null: no Inception weights were given"
    )
    assert out["kid"]["value"] is None and "null" in out["kid"]["absent"]
    for name in ("clip_s", "clipscore_100", "clip_r_precision"):
        assert out[name]["absent"].startswith("models.coco_t5.evaluate.clip_score.weights is null")
