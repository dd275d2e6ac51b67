"""A model is one entry (issue 24): params.yaml `models:` holds each named model, the class
table holds classes, each value is written once, the saved model describes itself, and
functions stay small."""

import ast
import hashlib
import importlib
import json
import subprocess
import sys

import pytest
import yaml
from pydantic_core import PydanticUndefined

from pipeline import config as schema
from pipeline.checkpoint import load_model, read_config
from pipeline.config import load_params
from pipeline.errors import PipelineError
from pipeline.latent_density import DENSITY_FILE, saved_density
from pipeline.models.registry import CLASSES, build, model_class

from .conftest import REPO, copy_repo, dvc, run_env
from .test_stage_deps import FMNIST_OF, record_placeholder_outputs, stale_stages

SIZES = {"input_dim", "cond_dim", "image_size", "text_dim", "num_classes"}  # from the data
MAX_PARAMETERS = 7


def _fields(cls) -> dict:
    return cls.model_fields


def test_no_key_of_a_model_entry_is_defined_in_two_places():
    """Each value once: every key of every entry is declared exactly once, by the model's
    Config (arch) or by one schema class (train, evaluate), and no schema field of an entry
    carries a default that would be a second copy of the params.yaml value."""
    params = load_params(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    for name, entry in params.models.items():
        config_fields = set(model_class(entry.class_name).Config.model_fields) - SIZES
        assert set(raw[name]["arch"]) == config_fields, name  # all of the Config, nothing else
        for part in ("train", "evaluate"):
            typed = getattr(entry, part)
            fields = _fields(type(typed))
            assert set(raw[name][part]) == set(fields), f"{name}.{part}"
            assert not set(fields) & config_fields, f"{name}: {set(fields) & config_fields}"
            defaulted = [
                k
                for k, f in fields.items()
                if f.default is not PydanticUndefined or f.default_factory is not None
            ]
            assert defaulted == [], f"models.{name}.{part}: schema defaults {defaulted}"
        top = _fields(type(entry))
        assert [k for k, f in top.items() if f.default is not PydanticUndefined] == []
    for section in (schema.Judge, schema.Cas, schema.FitSpec):
        assert all(f.default is PydanticUndefined for f in _fields(section).values()), section


def test_the_registry_is_a_table_of_classes():
    assert all(isinstance(v, str) and ":" in v for v in CLASSES.values())
    for key in CLASSES:
        cls = model_class(key)
        assert hasattr(cls, "Config") and cls.kind == key or key == "judge"


def test_arch_is_checked_by_the_class_config_with_the_key_named():
    arch = {"hidden_dim": 400, "latent_dim": 20, "fusion": "concat"}
    model = build("models.m.arch", "cvae_mlp", arch, input_dim=784, cond_dim=10)
    assert model.config.hidden_dim == 400
    cases = {
        "models.m.arch.widht: not a key of cvae_mlp": {**arch, "widht": 3},
        "models.m.arch.latent_dim: Input should be greater": {**arch, "latent_dim": 0},
        "models.m.arch: fusion missing": {k: v for k, v in arch.items() if k != "fusion"},
    }
    for message, bad in cases.items():
        with pytest.raises(PipelineError) as info:
            build("models.m.arch", "cvae_mlp", bad, input_dim=784, cond_dim=10)
        assert str(info.value).startswith(message), str(info.value)
    with pytest.raises(PipelineError, match="unknown model class 'mlp'"):
        build("models.m.arch", "mlp", arch)


def _parameters(node) -> int:
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    names = names[1:] if names and names[0] in ("self", "cls") else names
    return len(names) + (a.vararg is not None) + (a.kwarg is not None)


def _is_cli_command(node) -> bool:
    """A typer command: its parameters are the command-line options, one each by design."""
    return any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "command"
        for d in node.decorator_list
    )


def test_no_function_in_pipeline_or_stages_takes_more_than_seven_parameters():
    over = []
    for path in sorted([*(REPO / "pipeline").rglob("*.py"), *(REPO / "stages").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if function and not _is_cli_command(node) and _parameters(node) > MAX_PARAMETERS:
                over.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert over == []
    fit = importlib.import_module("pipeline.train").fit
    assert list(fit.__code__.co_varnames[: fit.__code__.co_argcount]) == [
        "model",
        "data",
        "spec",
        "run",
    ]


def test_the_result_readers_hold_no_model_name_and_no_alternative_spellings():
    names = set(yaml.safe_load((REPO / "params.yaml").read_text())["models"])
    for path in (REPO / "scripts/results_table.py", REPO / "pipeline/report.py"):
        text = path.read_text()
        assert [n for n in names if n in text] == [], path.name
        assert '"w="' not in text and "'w'" not in text, path.name


def test_saved_config_says_what_the_model_is_and_can_do(finished_root_run):
    """Every trained model's config.json holds its class, conditioning, cond_null_p and image
    shape; the readers take these from it (evaluate, cas, generate, the API)."""
    params = load_params(finished_root_run.repo / "params.yaml")
    for name, entry in params.models.items():
        if entry.data != "fmnist":
            continue
        config = json.loads((finished_root_run.repo / "models" / name / "config.json").read_text())
        assert config["name"] == name and config["class"] == entry.class_name
        assert config["conditioning"] == entry.conditioning
        assert config["cond_null_p"] == entry.train.cond_null_p
        assert config["image_shape"] == [1, 28, 28]
        density = finished_root_run.repo / "models" / name / DENSITY_FILE
        if entry.is_text:
            assert len(config["encoder_sha256"]) == 64
            assert "density_sha256" not in config and not density.exists()
        else:  # the ex-post density of its entry, fitted after training, beside the weights
            assert config["density_components"] == entry.expost.components
            assert config["density_sha256"] == hashlib.sha256(density.read_bytes()).hexdigest()
            model, _ = load_model(density.parent)
            meta = read_config(density.parent / "config.json").meta
            loaded = saved_density(density.parent, meta, model.config.latent_dim, 10)
            assert loaded.means.shape == (10, entry.expost.components, model.config.latent_dim)


@pytest.mark.e2e
def test_editing_one_entry_marks_only_that_models_stages(finished_root_run, tmp_path):
    repo = copy_repo(finished_root_run.repo, tmp_path)
    record_placeholder_outputs(repo)
    assert stale_stages(repo) == set()
    original = (repo / "params.yaml").read_text()
    edits = {
        ("fmnist_conv", "arch", "width"): 16,
        ("fmnist_text", "train", "lr"): 0.002,
        ("fmnist_label", "evaluate", "iw_k"): 9,
    }
    for (model, part, key), value in edits.items():
        raw = yaml.safe_load(original)
        raw["models"][model][part][key] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        stale = stale_stages(repo)
        assert stale <= FMNIST_OF[model] and stale, (model, part, stale)
        if part != "evaluate":  # training changes: its train stage first of all
            assert any(s.startswith("train") for s in stale)
    (repo / "params.yaml").write_text(original)
    assert stale_stages(repo) == set()


@pytest.mark.e2e
def test_a_new_entry_is_picked_up_as_a_new_user_adds_it(finished_root_run, tmp_path):
    """Copy the fmnist_label entry under a new name with another seed (and one overlay line
    of the small setting): the generator writes its stages, `dvc status` lists those and no
    others, its evaluate stage runs, and the results page shows it."""
    repo = copy_repo(finished_root_run.repo, tmp_path)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    entry = json.loads(json.dumps(raw["models"]["fmnist_label"]))
    entry["train"]["seed"] = 1
    entry["summary"] = "the paper's model, seed 1"
    raw["models"]["fmnist_seed1"] = entry
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = run_env(repo)

    def script(*args):
        run = subprocess.run([sys.executable, *args], cwd=repo, env=env, capture_output=True)
        assert run.returncode == 0, run.stdout.decode() + run.stderr.decode()
        return run.stdout.decode()

    assert (
        subprocess.run(
            [sys.executable, "scripts/stage_deps.py", "--check"], cwd=repo, env=env
        ).returncode
        == 1
    )  # the new entry has no stages yet: drift
    script("scripts/stage_deps.py")
    script("scripts/stage_deps.py", "--check")
    new = {"train@fmnist_seed1", "evaluate@fmnist_seed1", "cas@fmnist_seed1"}
    assert set(json.loads(dvc(repo, "status", "dvc.yaml", "--json"))) == new  # the root pipeline
    dvc(repo, "repro", "evaluate@fmnist_seed1")
    metrics = json.loads((repo / "metrics/fmnist_seed1/eval.json").read_text())
    assert 0.0 <= metrics["judge_accuracy_on_samples"]["overall"]["mean"] <= 1.0
    script("scripts/results_table.py", "--write")
    assert "fmnist_seed1" in (repo / "docs/results.md").read_text()
