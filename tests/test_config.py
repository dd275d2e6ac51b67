from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.config import load_params, parse_params
from pipeline.data.fmnist_download import fetch_fmnist
from pipeline.errors import PipelineError
from stages.cli import app

from .conftest import REPO, params_with, repo_params

FMNIST = "models.fmnist_label.train"


def test_repository_params_file_is_valid():
    params = load_params(REPO / "params.yaml")
    assert params.model("fmnist_label").train.epochs == 40  # the paper's §2.1 setting


def test_unknown_key_is_named():
    with pytest.raises(
        PipelineError,
        match=r"^params.yaml: invalid params: models\.fmnist_label\.train\.epoch: unknown key",
    ):
        parse_params(params_with(f"{FMNIST}.epoch", 3))


def test_wrong_type_is_named_with_expectation():
    with pytest.raises(PipelineError, match=r"judge\.batch_size: .*integer.*'many'"):
        parse_params(params_with("judge.batch_size", "many"))


def test_out_of_range_value_is_named_with_bound():
    with pytest.raises(
        PipelineError, match=r"models\.fmnist_label\.train\.epochs: .*greater than or equal to 1"
    ):
        parse_params(params_with(f"{FMNIST}.epochs", 0))


def test_every_bad_key_is_listed_at_once():
    raw = repo_params()
    raw["judge"] |= {"lr": -1, "device": "tpu"}
    raw["models"]["fmnist_label"]["evaluate"]["typo"] = 1
    with pytest.raises(PipelineError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "judge.lr" in message and "judge.device" in message
    assert "models.fmnist_label.evaluate.typo" in message


@pytest.mark.parametrize("section", ["models", "judge", "cas", "report"])
def test_a_section_without_defaults_is_named_when_missing(section):
    """The models, the judge, CAS and the report's paper model have no defaults: params.yaml
    holds their values, and a file without one is one line naming it."""
    raw = repo_params()
    del raw[section]
    with pytest.raises(PipelineError, match=rf"^params.yaml: invalid params: {section}: Field req"):
        parse_params(raw)


def test_a_missing_key_of_a_model_entry_is_named():
    train = repo_params()["models"]["fmnist_label"]["train"]
    del train["lr"]
    with pytest.raises(
        PipelineError, match=rf"^params.yaml: invalid params: {FMNIST}\.lr: Field required$"
    ):
        parse_params(params_with(FMNIST, train))


def test_missing_params_file_says_where_to_run(tmp_path):
    with pytest.raises(PipelineError, match="params file not found"):
        load_params(tmp_path / "params.yaml")


def test_stage_stops_on_bad_params_before_any_work(tmp_path, monkeypatch, fmnist_gz_dir):
    # A working directory where training could run (the data is there), so that any work
    # done before validation would leave models/ or metrics/ behind.
    fetch_fmnist(tmp_path / "data/raw/fmnist", source="local", local_dir=str(fmnist_gz_dir))
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    bad = repo_params()
    bad["models"]["fmnist_label"]["train"] |= {"epochs": -3, "train_limit": 64, "device": "cpu"}
    Path("params.yaml").write_text(yaml.safe_dump(bad))
    result = CliRunner().invoke(app, ["train", "fmnist_label"])
    assert result.exit_code == 1
    assert "models.fmnist_label.train.epochs" in result.output
    assert sorted(tmp_path.rglob("*")) == [*before, tmp_path / "params.yaml"]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (f"{FMNIST}.epochs", True, r"a valid integer \(got True\)"),
        (f"{FMNIST}.epochs", "3", r"a valid integer \(got '3'\)"),
        (f"{FMNIST}.epochs", 3.0, r"a valid integer \(got 3.0\)"),
        ("judge.lr", "0.1", r"a valid number \(got '0.1'\)"),
        ("models.coco_clip.train.amp", "yes", r"a valid boolean \(got 'yes'\)"),
        ("download.fmnist.retries", False, r"a valid integer \(got False\)"),
    ],
)
def test_bools_and_strings_are_not_numbers(key, value, expected):
    with pytest.raises(
        PipelineError,
        match=rf"^params.yaml: invalid params: {key}: Input should be {expected}$",
    ):
        parse_params(params_with(key, value))


@pytest.mark.parametrize("key", ["timeout_s", "deadline_s", "backoff_s"])
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_infinities_and_nan_are_refused_in_one_line(tmp_path, key, value):
    path = tmp_path / "params.yaml"
    text = yaml.safe_dump(params_with(f"download.coco.{key}", 12345.5), sort_keys=False)
    path.write_text(text.replace(f"{key}: 12345.5", f"{key}: {value}"))
    assert f"{key}: {value}\n" in path.read_text()  # YAML's own spelling, as a user writes it
    with pytest.raises(PipelineError) as info:
        load_params(path)
    got = float(value.replace(".", "", 1))  # YAML's .inf, -.inf, .nan
    expected = f"download.coco.{key}: Input should be a finite number (got {got})"
    assert str(info.value) == f"{path}: invalid params: {expected}"


def test_an_int_is_still_a_float_and_the_test_params_validate():
    from .conftest import tiny_params

    assert parse_params(params_with("judge.lr", 1)).judge.lr == 1.0
    parse_params(tiny_params())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("download.coco.annotations_url", "file:///etc/hostname"),
        ("download.fmnist.mirrors", ["https://ok.example/", "ftp://a.example/"]),
    ],
)
def test_urls_must_be_http(key, value):
    with pytest.raises(
        PipelineError,
        match=r"download\.\w+\.\w+: Value error, expected an "
        r"http:// or https:// URL",
    ):
        parse_params(params_with(key, value))


def test_credentials_in_a_bad_url_param_are_redacted():
    with pytest.raises(PipelineError) as info:
        parse_params(params_with("download.fmnist.mirrors", ["ftp://bob:TOKEN9@h.example/"]))
    assert "TOKEN9" not in str(info.value) and "ftp://***@h.example/" in str(info.value)


def test_annotations_sha256_is_64_hex_digits_or_null():
    official = "031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009"
    unset = repo_params()
    del unset["download"]["coco"]["annotations_sha256"]
    assert parse_params(unset).download.coco.annotations_sha256 == official  # pinned by default
    key = "download.coco.annotations_sha256"
    assert parse_params(params_with(key, None)).download.coco.annotations_sha256 is None
    assert parse_params(params_with(key, "a" * 64))
    with pytest.raises(PipelineError, match=r"download.coco.annotations_sha256: String should"):
        parse_params(params_with(key, "A" * 63))


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


def _defaults(cls) -> dict:
    """The defaults a schema class declares, dumped as params.yaml spells them (aliases, JSON
    values); a section without a default of its own is walked into, a field without one left
    out."""
    from pydantic import BaseModel, TypeAdapter
    from pydantic_core import PydanticUndefined

    found = {}
    for name, field in cls.model_fields.items():
        key = field.alias or name
        if field.default is not PydanticUndefined or field.default_factory is not None:
            value = field.get_default(call_default_factory=True)
            found[key] = TypeAdapter(field.annotation).dump_python(
                value, mode="json", by_alias=True
            )
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            inner = _defaults(field.annotation)
            if inner:
                found[key] = inner
    return found


def test_params_yaml_holds_exactly_the_schemas_defaults():
    """One source of truth. The sections that keep defaults (download, pack, embed, generate,
    and the report's bound) are written out in params.yaml key for key and value for value
    (and type: 1 is not 1.0), so the two cannot drift apart; the models, the judge and CAS
    declare none (tests/test_models_as_data.py), so params.yaml alone holds their values."""
    from pipeline.config import Params

    written = yaml.safe_load((REPO / "params.yaml").read_text())
    defaults = _defaults(Params)
    assert set(defaults) == {"download", "pack", "embed", "generate", "report"}
    assert "paper_model" not in defaults["report"]  # required: params.yaml names the model
    view = {key: written.get(key) for key in defaults}
    view["report"] = {k: v for k, v in written["report"].items() if k in defaults["report"]}
    assert _diff(defaults, view) == []
    # Values where the schema once disagreed with the file (params.yaml's made the metrics).
    models = written["models"]
    assert models["fmnist_text_prior"]["arch"]["arch"] == "mlp"
    assert models["fmnist_text_prior"]["arch"]["cond_noise"] == 0.06
    assert models["coco_t5"]["train"]["keep_epochs"] == [40, 100]


def test_the_defaults_check_sees_a_changed_value_and_a_missing_key():
    assert _diff({"a": {"b": 1, "c": [1]}}, {"a": {"b": 1, "c": [1]}}) == []
    assert _diff({"a": {"b": 1}}, {"a": {"b": 2}}) == ["a.b: schema 1, params.yaml 2"]
    assert _diff({"a": {"b": 1}}, {"a": {"b": 1.0}}) == ["a.b: schema 1, params.yaml 1.0"]
    assert _diff({"a": {"b": 1}}, {"a": {}}) == ["a.b: only in the schema"]
    assert _diff({"a": {}}, {"a": {"x": 0}}) == ["a.x: only in params.yaml"]


def test_every_param_has_a_description():
    """Every key, down to those of each kind of model entry (reached through ``models``'
    dict and its tagged union) and their train and evaluate sections."""
    from typing import get_args

    from pydantic import BaseModel

    from pipeline.config import Params

    def classes(annotation):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield annotation
        for inner in get_args(annotation):  # dict[str, X], X | None, Annotated[X | Y, ...]
            yield from classes(inner)

    def walk(cls, key=""):
        for name, field in cls.model_fields.items():
            yield f"{key}{field.alias or name}", field
            for inner in dict.fromkeys(classes(field.annotation)):
                yield from walk(inner, f"{key}{field.alias or name}.")

    keys = {key: field for key, field in walk(Params)}
    assert {"models.train.epochs", "models.evaluate.clip_score.model"} <= set(keys)  # reached
    assert [key for key, field in keys.items() if not field.description] == []
