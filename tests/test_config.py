from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.config import load_params, parse_params
from pipeline.data.fmnist_download import fetch_fmnist
from pipeline.errors import PipelineError
from stages.cli import app

from .conftest import REPO


def test_repository_params_file_is_valid():
    params = load_params(REPO / "params.yaml")
    assert params.train.fmnist_label.epochs == 40  # the paper's §2.1 setting


def test_unknown_key_is_named():
    with pytest.raises(PipelineError, match=r"train\.fmnist_label\.epoch: unknown key"):
        parse_params({"train": {"fmnist_label": {"epoch": 3}}})


def test_wrong_type_is_named_with_expectation():
    with pytest.raises(PipelineError, match=r"judge\.batch_size: .*integer.*'many'"):
        parse_params({"judge": {"batch_size": "many"}})


def test_out_of_range_value_is_named_with_bound():
    with pytest.raises(
        PipelineError, match=r"train\.fmnist_label\.epochs: .*greater than or equal to 1"
    ):
        parse_params({"train": {"fmnist_label": {"epochs": 0}}})


def test_every_bad_key_is_listed_at_once():
    with pytest.raises(PipelineError) as info:
        parse_params({"judge": {"lr": -1, "device": "tpu"}, "evaluate": {"typo": 1}})
    message = str(info.value)
    assert "judge.lr" in message and "judge.device" in message and "evaluate.typo" in message


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(PipelineError, match="params file not found"):
        load_params(tmp_path / "params.yaml")


def test_stage_stops_on_bad_params_before_any_work(tmp_path, monkeypatch, fmnist_gz_dir):
    # A working directory where training could run (the data is there), so that any work
    # done before validation would leave models/ or metrics/ behind.
    fetch_fmnist(tmp_path / "data/raw/fmnist", source="local", local_dir=str(fmnist_gz_dir))
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    bad = {"train": {"fmnist_label": {"epochs": -3, "train_limit": 64, "device": "cpu"}}}
    Path("params.yaml").write_text(yaml.safe_dump(bad))
    result = CliRunner().invoke(app, ["train", "fmnist_label"])
    assert result.exit_code == 1
    assert "train.fmnist_label.epochs" in result.output
    assert sorted(tmp_path.rglob("*")) == [*before, tmp_path / "params.yaml"]


FMNIST = "train.fmnist_label"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (f"{FMNIST}.epochs", True, r"a valid integer \(got True\)"),
        (f"{FMNIST}.epochs", "3", r"a valid integer \(got '3'\)"),
        (f"{FMNIST}.epochs", 3.0, r"a valid integer \(got 3.0\)"),
        ("judge.lr", "0.1", r"a valid number \(got '0.1'\)"),
        ("train.coco_clip.amp", "yes", r"a valid boolean \(got 'yes'\)"),
        ("download.fmnist.retries", False, r"a valid integer \(got False\)"),
    ],
)
def test_bools_and_strings_are_not_numbers(key, value, expected):
    raw: dict = {}
    node = raw
    *sections, name = key.split(".")
    for section in sections:
        node = node.setdefault(section, {})
    node[name] = value
    with pytest.raises(
        PipelineError,
        match=rf"^params.yaml: invalid params: {key}: Input should "
        rf"be {expected}$",
    ):
        parse_params(raw)


@pytest.mark.parametrize("key", ["timeout_s", "deadline_s", "backoff_s"])
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_infinities_and_nan_are_refused_in_one_line(tmp_path, key, value):
    path = tmp_path / "params.yaml"
    path.write_text(f"download:\n  coco:\n    {key}: {value}\n")
    with pytest.raises(PipelineError) as info:
        load_params(path)
    got = float(value.replace(".", "", 1))  # YAML's .inf, -.inf, .nan
    expected = f"download.coco.{key}: Input should be a finite number (got {got})"
    assert str(info.value) == f"{path}: invalid params: {expected}"


def test_an_int_is_still_a_float_and_the_test_params_validate():
    from .conftest import tiny_params

    assert parse_params({"judge": {"lr": 1}}).judge.lr == 1.0
    parse_params(tiny_params())


@pytest.mark.parametrize(
    "raw",
    [
        {"download": {"coco": {"annotations_url": "file:///etc/hostname"}}},
        {"download": {"fmnist": {"mirrors": ["https://ok.example/", "ftp://a.example/"]}}},
    ],
)
def test_urls_must_be_http(raw):
    with pytest.raises(
        PipelineError,
        match=r"download\.\w+\.\w+: Value error, expected an "
        r"http:// or https:// URL",
    ):
        parse_params(raw)


def test_credentials_in_a_bad_url_param_are_redacted():
    with pytest.raises(PipelineError) as info:
        parse_params({"download": {"fmnist": {"mirrors": ["ftp://bob:TOKEN9@h.example/"]}}})
    assert "TOKEN9" not in str(info.value) and "ftp://***@h.example/" in str(info.value)


def test_annotations_sha256_is_64_hex_digits_or_null():
    official = "031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009"
    assert parse_params({}).download.coco.annotations_sha256 == official  # pinned by default
    assert parse_params({"download": {"coco": {"annotations_sha256": None}}})
    assert parse_params({"download": {"coco": {"annotations_sha256": "a" * 64}}})
    with pytest.raises(PipelineError, match=r"download.coco.annotations_sha256: String should"):
        parse_params({"download": {"coco": {"annotations_sha256": "A" * 63}}})


def _diff(schema, written, key=""):
    """Every key whose value differs between the schema's defaults and params.yaml."""
    if isinstance(schema, dict) and isinstance(written, dict):
        return [
            line
            for name in sorted(set(schema) | set(written), key=str)
            for line in (
                [f"{key}{name}: only in {'params.yaml' if name in written else 'the schema'}"]
                if (name in schema) != (name in written)
                else _diff(schema[name], written[name], f"{key}{name}.")
            )
        ]
    same = schema == written and type(schema) is type(written)
    return [] if same else [f"{key[:-1]}: schema {schema!r}, params.yaml {written!r}"]


def test_params_yaml_holds_exactly_the_schemas_defaults():
    """One source of truth: pipeline/config.py's defaults; params.yaml writes them all out, key
    for key and value for value (and type: 1 is not 1.0), so the two cannot drift apart."""
    from pipeline.config import Params

    schema = Params().model_dump(by_alias=True, mode="json")
    written = yaml.safe_load((REPO / "params.yaml").read_text())
    assert _diff(schema, written) == []
    # Values where the schema once disagreed with the file (params.yaml's made the metrics).
    assert written["train"]["fmnist_text_prior"]["arch"] == "mlp"
    assert written["train"]["fmnist_text_prior"]["cond_noise"] == 0.06
    assert written["train"]["coco_t5"]["keep_epochs"] == [40, 100]


def test_the_defaults_check_sees_a_changed_value_and_a_missing_key():
    assert _diff({"a": {"b": 1, "c": [1]}}, {"a": {"b": 1, "c": [1]}}) == []
    assert _diff({"a": {"b": 1}}, {"a": {"b": 2}}) == ["a.b: schema 1, params.yaml 2"]
    assert _diff({"a": {"b": 1}}, {"a": {"b": 1.0}}) == ["a.b: schema 1, params.yaml 1.0"]
    assert _diff({"a": {"b": 1}}, {"a": {}}) == ["a.b: only in the schema"]
    assert _diff({"a": {}}, {"a": {"x": 0}}) == ["a.x: only in params.yaml"]


def test_every_param_has_a_description():
    from pydantic import BaseModel

    from pipeline.config import Params

    def walk(cls, key=""):
        for name, field in cls.model_fields.items():
            yield f"{key}{field.alias or name}", field
            for inner in (field.annotation, *getattr(field.annotation, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    yield from walk(inner, f"{key}{field.alias or name}.")

    assert [key for key, field in walk(Params) if not field.description] == []
