import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_params, parse_params
from pipeline.errors import PipelineError

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


def test_stage_stops_on_bad_params_before_any_work(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"train": {"fmnist_label": {"epochs": -3}}}))
    result = CliRunner().invoke(app, ["train", "fmnist_label", "--params", str(bad)])
    assert result.exit_code == 1
    assert "train.fmnist_label.epochs" in result.output
    assert not (tmp_path / "models").exists()
