"""Shared fixtures and helpers: the real Fashion-MNIST files, a loopback HTTP server, a temp
repo copy, one finished tiny run of the root pipeline, and running `dvc` / `t2i` in them."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipeline.data.fmnist_download import DEBIAN_DIR

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fmnist_gz_dir() -> Path:
    """The Debian package's IDX .gz files (the README's test command installs it)."""
    if not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"{DEBIAN_DIR} missing: run `apt-get install dataset-fashion-mnist`")
    return DEBIAN_DIR


class LoopbackServer:
    """Serves ``routes[path]``: a list of (status, body) answered in turn; the last repeats.

    An answer may also be a function of the request handler that writes the whole response
    itself (a body cut short, a trickle, a redirect). ``headers[path]`` holds the request
    headers of the last request for that path.
    """

    def __init__(self):
        self.routes: dict[str, list] = {}
        self.hits: dict[str, int] = {}
        self.headers: dict[str, dict[str, str]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                server.headers[self.path] = dict(self.headers)
                answers = server.routes.get(self.path, [(404, b"not found")])
                answer = answers[min(server.hits[self.path], len(answers)) - 1]
                if callable(answer):
                    return answer(self)
                status, body = answer
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server():
    server = LoopbackServer()
    yield server
    server.close()


SMALL_OVERLAY = REPO / "params-small.yaml"  # the GitHub workflow's small run applies it too


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apply_overlay = _load_script("apply_overlay")


def tiny_params() -> dict:
    """params.yaml with the small overlay (params-small.yaml) applied, as the GitHub workflow
    applies it: every repo copy (and so the shared finished root run) gets these, so each
    `dvc repro` of the suite runs the workflow's small setting.

    A new section or stage (another model to train, a new metric stage) needs its epochs,
    data limits and sample counts shrunk in params-small.yaml, and ``device: cpu``, or every
    `dvc repro` of the suite runs it at full size.
    """
    return apply_overlay.apply_files(REPO / "params.yaml", SMALL_OVERLAY)


def run_env(repo: Path | None = None) -> dict:
    """The environment of a shell that activated this venv, so dvc finds `t2i`.

    The ``pipeline`` and ``stages`` of ``repo`` (default: this checkout) come first on the
    import path: a command runs the code under test, even where the venv's editable install
    points at another checkout (its `t2i` would import that one's code).
    """
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    root = str(repo if repo is not None else REPO)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def dvc(repo: Path, *args: str) -> str:
    """``dvc ARGS`` in ``repo``; fails the test with DVC's output when it fails."""
    result = subprocess.run(
        ["dvc", *args], cwd=repo, env=run_env(repo), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def root_stages(repo: Path) -> set[str]:
    """Every stage of the root dvc.yaml as `dvc repro` names them (foreach and matrix items
    expanded). Derived from dvc.yaml, so a stage added there is expected by the tests too."""
    return set(dvc(repo, "stage", "list", "--name-only", "dvc.yaml").split())


def stages_run(output: str) -> set[str]:
    """The stages that a `dvc repro` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_param(repo: Path, section: str, key: str, value) -> None:
    """Set ``section.key`` (``models.fmnist_label.train``, ``epochs``) in the repo's
    params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    node = params
    for part in section.split("."):
        node = node[part]
    node[key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """The tracked files of this repository in a fresh git repo, with tiny params."""
    return make_repo_copy(tmp_path)


def make_repo_copy(tmp_path: Path, small: bool = True) -> Path:
    """The tracked files in a fresh git repo; params.yaml with the small overlay applied
    (``small``), or as committed."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    dest = tmp_path / "repo"
    skip = ("data/", "models/", "metrics/", "reports/", "dvc.lock")
    for name in files:
        if name.startswith(skip) or not (REPO / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    if small:
        (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def copy_repo(repo: Path, tmp_path: Path) -> Path:
    """A full copy of ``repo`` (git history, DVC cache, workspace outputs, resume states) at
    ``tmp_path/repo``: much cheaper than rerunning what made it. The cache is in the repo's
    own .dvc/cache and the default link type copies files (none is configured), so the
    copy's outputs are plain files backed by its own cache. Symlinks are copied as the files
    they point to (never into the original), and .dvc/tmp (DVC's state and lock files,
    keyed by inode) is left behind for DVC to rebuild."""

    def ignore(folder, names):
        return ["tmp"] if Path(folder) == repo / ".dvc" else []

    return Path(shutil.copytree(repo, tmp_path / "repo", ignore=ignore))


WORKFLOW = REPO / ".github/workflows/pipeline.yml"


def workflow_small_run() -> list[str]:
    """The commands of the GitHub workflow's small-run step (the one that runs `dvc repro`),
    in order, without its venv activation."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["repro"]["steps"]
    runs = [step["run"] for step in steps if "dvc repro" in step.get("run", "")]
    assert len(runs) == 1, f"{WORKFLOW.name}: expected one step that runs dvc repro"
    lines = [line.strip() for line in runs[0].splitlines()]
    return [line for line in lines if line and line != ". .venv/bin/activate"]


@pytest.fixture(scope="session")
def finished_root_run(tmp_path_factory) -> SimpleNamespace:
    """The GitHub workflow's small run, done in a repo copy: its step's own commands (apply
    params-small.yaml, then `dvc repro` of the whole root pipeline), shared by the session.
    ``repo``: the finished copy, uncommitted after the copy's first commit (small params,
    outputs, dvc.lock), as the workflow leaves its checkout; ``output``: what `dvc repro`
    printed. Tests only read it; a test that changes anything works in
    ``copy_repo(finished_root_run.repo, tmp_path)``."""
    repo = make_repo_copy(tmp_path_factory.mktemp("root_run"), small=False)
    output = None
    for command in workflow_small_run():
        program, *args = shlex.split(command)
        if program == "dvc":
            output = dvc(repo, *args)
        elif program == "python":  # the venv's python, as the activated step's
            run = subprocess.run(
                [sys.executable, *args], cwd=repo, env=run_env(repo), capture_output=True, text=True
            )
            assert run.returncode == 0, f"{command}: {run.stdout}{run.stderr}"
        else:
            raise AssertionError(f"{WORKFLOW.name}: the fixture runs python and dvc, not {command}")
    assert output is not None and "Running stage" in output
    return SimpleNamespace(repo=repo, output=output)


def one_error_line(result) -> str:
    """The one `error: ` line of a failed `t2i` command run by typer's CliRunner: exit code 1,
    no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


def tiny_prior(**fields):
    """A small CVAEPrior for unit tests: the MLP body with a learned prior on one-hot labels,
    every config field at the value below unless the test names it."""
    from pipeline.models.cvae_prior import CVAEPrior

    sizes = dict(cond_dim=10, latent_dim=6, width=4, cond_hidden=8, prior="learned")
    rest = dict(fusion="concat", cond_noise=0.0, cond_dropout=0.0, arch="mlp")
    return CVAEPrior.of(**{**sizes, **rest, "likelihood": "bernoulli", "beta": 1.0, **fields})


def fit_spec(**fields):
    """A FitSpec for unit tests of the loop: the schedule below unless the test names a key
    (the schema has no defaults: params.yaml holds the values of the real sections)."""
    from pipeline.config import FitSpec

    neutral = dict(seed=0, device="cpu", lr_schedule="constant", weight_decay=0.0)
    neutral |= dict(grad_clip=None, warmup_steps=0, max_nonfinite_steps=20)
    neutral |= dict(max_nonfinite_share=0.5, cond_null_p=0.0, keep_epochs=[], amp=False)
    return FitSpec(**{"epochs": 1, "batch_size": 32, "lr": 1e-3, **neutral, **fields})


def fit_run(name: str = "model", **fields):
    """A FitRun for unit tests: a seeded generator, no resume state and no curves unless named."""
    import torch

    from pipeline.train import FitRun

    generator = fields.pop("generator", None) or torch.Generator().manual_seed(0)
    return FitRun(name, generator, fields.pop("fingerprint", "test"), **fields)


def repo_params() -> dict:
    """params.yaml of this checkout as a plain mapping (a test changes its copy)."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def params_with(key: str, value) -> dict:
    """The repository's params with dotted ``key`` set to ``value`` (a new key is added): a
    whole, valid file but for what the test changes, so errors name only that key."""
    params = repo_params()
    node = params
    *parts, last = key.split(".")
    for part in parts:
        node = node.setdefault(part, {})
    node[last] = value
    return params
