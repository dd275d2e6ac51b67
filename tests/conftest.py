"""Shared fixtures and helpers: the real Fashion-MNIST files, a loopback HTTP server, a temp
repo copy, one finished tiny run of the root pipeline, and running `dvc` / `t2i` in them."""

from __future__ import annotations

import os
import re
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


def tiny_params() -> dict:
    """params.yaml shrunk so the whole pipeline runs in seconds on a CPU.

    The one place that shrinks params for the tests: every repo copy (and so the shared
    finished root run) gets these. A new section or stage (another model to train, a new
    metric stage) needs its epochs, data limits and sample counts shrunk here, and
    ``device="cpu"``, or every `dvc repro` of the suite runs it at full size.
    """
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["fmnist_label"].update(epochs=2, train_limit=2048, device="cpu")
    for name in ("fmnist_text", "fmnist_conv", "fmnist_text_prior"):
        params["train"][name].update(epochs=2, train_limit=2048, device="cpu")
    for name in ("fmnist_conv", "fmnist_text_prior"):  # guided: w is chosen on validation
        params["train"][name]["cond_null_p"] = 0.1
    params["evaluate"]["fmnist_conv"].update(
        iw_k=8, samples_per_class=20, test_limit=500, device="cpu", val_images=1000
    )
    params["cas"].update(samples_per_class=100, real_limit=2048, epochs=1, device="cpu")
    params["evaluate"]["fmnist_text"].update(
        samples_per_caption=5, test_limit=500, device="cpu", val_images=1000
    )
    params["embed"].update(device="cpu")
    params["judge"].update(epochs=1, train_limit=2048, min_accuracy=0.5, device="cpu")
    params["evaluate"]["fmnist_label"].update(
        iw_k=8, samples_per_class=20, test_limit=500, device="cpu", val_images=1000
    )
    return params


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
    """Set ``section.key`` (``train.fmnist_label``, ``epochs``) in the repo's params.yaml."""
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


def make_repo_copy(tmp_path: Path) -> Path:
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


@pytest.fixture(scope="session")
def finished_root_run(tmp_path_factory) -> SimpleNamespace:
    """One `dvc repro` of the whole root pipeline (dvc.yaml) in a repo copy with tiny params,
    shared by the session. ``repo``: the finished copy, uncommitted after the copy's first
    commit (outputs, dvc.lock); ``output``: what `dvc repro` printed. Tests only read it; a
    test that changes anything works in ``copy_repo(finished_root_run.repo, tmp_path)``."""
    repo = make_repo_copy(tmp_path_factory.mktemp("root_run"))
    return SimpleNamespace(repo=repo, output=dvc(repo, "repro"))
