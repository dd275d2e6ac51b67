"""The guidance frontier of the Fashion-MNIST evaluations in the session's tiny root run: its
points, the w chosen on validation data, CAS at that w, and the `dvc plots` definition."""

import json
import math
import subprocess

import pytest
import yaml

from pipeline.frontier import NO_DROPOUT, RULE

from .conftest import dvc

pytestmark = pytest.mark.e2e

MODELS = ("fmnist_label", "fmnist_conv", "fmnist_text", "fmnist_text_prior")
ROW_KEYS = {
    "guidance",
    "temperature",
    "accuracy",
    "accuracy_std",
    "frechet",
    "frechet_std",
    "spread",
    "spread_std",
    "real_spread",
}


def _read(repo, path):
    return json.loads((repo / path).read_text())


@pytest.mark.parametrize("name", MODELS)
def test_every_point_of_the_frontier_is_finite_with_its_keys(finished_root_run, name):
    repo = finished_root_run.repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    p = params["models"][name]["evaluate"]
    rows = _read(repo, f"metrics/{name}/frontier.json")
    expected = [(t, w) for t in p["temperature_sweep"] for w in p["guidance_sweep"]]
    assert [(r["temperature"], r["guidance"]) for r in rows] == expected
    for row in rows:
        assert set(row) == ROW_KEYS and all(math.isfinite(v) for v in row.values())
        assert row["frechet"] > 0 and row["spread"] > 0 and row["accuracy_std"] >= 0
    real_spread = rows[0]["real_spread"]
    assert all(r["real_spread"] == real_spread for r in rows) and real_spread > 0
    metrics = _read(repo, f"metrics/{name}/eval.json")
    w = metrics["guidance"]["w"]
    assert metrics["guidance"] == {"w": w, "temperature": p["temperature"]}
    assert metrics["conditions"]["guidance"] == w
    assert [(q["temperature"], q["guidance"]) for q in metrics["frontier"]] == expected
    assert [q["frechet"]["mean"] for q in metrics["frontier"]] == [r["frechet"] for r in rows]
    val = metrics["guidance_validation"]
    assert set(val) == {f"w={v:g}" for v in p["guidance_sweep"]}
    assert metrics["guidance_validation_real_spread"] > 0
    if params["models"][name]["train"]["cond_null_p"] == 0:
        assert (w, metrics["guidance_rule"]) == (0.0, NO_DROPOUT)
    else:  # the rule, replayed on the validation points it wrote
        assert metrics["guidance_rule"] == RULE
        allowed = {k: v for k, v in val.items() if v["frechet"] <= val["w=0"]["frechet"]}
        assert val[f"w={w:g}"]["accuracy"] == max(v["accuracy"] for v in allowed.values())
    # the headline numbers are the frontier's point at (chosen w, evaluate temperature)
    point = next(r for r in rows if (r["guidance"], r["temperature"]) == (w, p["temperature"]))
    split = "" if name in ("fmnist_label", "fmnist_conv") else "_heldout_phrasings"
    accuracy = metrics["judge_accuracy_on_samples" if not split else "judge_accuracy" + split]
    assert accuracy["overall"]["mean"] == point["accuracy"]
    cas = _read(repo, f"metrics/cas/{name}.json")
    assert cas["conditions"]["guidance"] == 0.0
    assert cas["at_chosen_guidance"]["conditions"]["guidance"] == w
    assert 0 <= cas["at_chosen_guidance"]["accuracy_on_real_test"] <= 1
    # every point of the frontier carries its CAS too, from a smaller training set
    assert [(q["temperature"], q["guidance"]) for q in cas["frontier"]] == expected
    assert all(0 <= q["cas"] <= 1 and math.isfinite(q["cas"]) for q in cas["frontier"])
    cas_p = params["cas"]
    frontier_p = cas_p["frontier"]
    assert cas["frontier_conditions"]["training_images"] == 10 * frontier_p["samples_per_class"]
    assert cas["frontier_conditions"]["training_images"] < cas["conditions"]["training_images"]


def test_the_papers_model_keeps_w0_and_its_cas_is_the_unguided_one(finished_root_run):
    cas = _read(finished_root_run.repo, "metrics/cas/fmnist_label.json")
    assert cas["at_chosen_guidance"]["accuracy_on_real_test"] == cas["accuracy_on_real_test"]


def test_dvc_plots_show_draws_the_frontier_of_every_model(finished_root_run):
    shown = json.loads(dvc(finished_root_run.repo, "plots", "show", "--json"))
    errors = [e for e in shown.get("errors") or [] if "frontier" in json.dumps(e)]
    assert errors == []  # (the COCO plots are absent: the root run does not make them)
    data = shown.get("data", shown)
    for name in MODELS:
        path = f"metrics/{name}/frontier.json"
        assert path in data, sorted(data)
        spec = json.dumps(data[path])
        assert '"frechet"' in spec and '"accuracy"' in spec
    title = "Guidance frontier, judge accuracy against judge-feature FD (docs/guidance.md)"
    assert title in data


@pytest.mark.parametrize("name", MODELS)
def test_generate_samples_every_fmnist_model_with_guidance(finished_root_run, tmp_path, name):
    """Every Fashion-MNIST model draws a grid at w 1.5 when its config.json says it was
    trained with the null condition; one trained without (cond_null_p 0, the paper's) has no
    null term to guide with: w 1.5 is refused in one line, and w 0 draws its grid."""
    from PIL import Image

    from .conftest import run_env

    repo = finished_root_run.repo
    config = _read(repo, f"models/{name}/config.json")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert config["cond_null_p"] == params["models"][name]["train"]["cond_null_p"]
    out = tmp_path / "guided.png"
    text = name.startswith("fmnist_text")
    command = ["t2i", "generate", "--model", f"models/{name}", "-n", "4", "-o", str(out)]
    command += ["--caption", "a strappy summer sandal"] if text else ["--label", "sandal"]
    command += ["--temperature", "0.8"]

    def generate(w: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, "--guidance", w], cwd=repo, env=run_env(repo), capture_output=True, text=True
        )

    run = generate("1.5")
    if config["cond_null_p"] == 0:
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        assert [line for line in run.stderr.splitlines() if line.startswith("error: ")] == [
            f"error: models/{name}: trained without a null condition (cond_null_p 0): it "
            "cannot be guided; use guidance 0"
        ], run.stderr
        assert not out.exists()
        run = generate("0")
    assert run.returncode == 0, run.stderr
    assert Image.open(out).size[0] > 4 * 28
