"""The docs stay true: docs/results.md is generated from metrics/ and current, the README is
short and its commands are the ones CI and setup run, and no relative link is broken."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "results_table.py"
MAIN_COMMAND = "bash scripts/setup.sh && . .venv/bin/activate && dvc repro"
TEST_COMMAND = "bash scripts/setup.sh && .venv/bin/python -m pytest"
# pages other work writes (generated params, reliability, guidance, coverage): links to them
# are allowed before they land
PAGES_WRITTEN_ELSEWHERE = {"params.md", "reliability.md", "guidance.md", "coverage.md"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def run_script(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "results_table.py"), *args],
        capture_output=True,
        text=True,
        cwd=root,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the results page is made from: metrics/, reports/, params.yaml, the
    script and the page; the library is linked (the script writes through pipeline/atomic)."""
    for folder in ("metrics", "reports"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    for name in ("params.yaml", "scripts/results_table.py", "docs/results.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "pipeline").symlink_to(REPO / "pipeline")
    return tmp_path


def test_results_page_is_current():
    done = run_script(REPO, "--check")
    assert done.returncode == 0, done.stderr
    assert run_script(REPO).stdout == (REPO / "docs" / "results.md").read_text()


def _schemas():
    """Each committed metrics file and the schema its writer uses (pipeline/metrics.py)."""
    from pipeline.config import load_params
    from pipeline.metrics import FrontierRows, JudgeLive, Live, cas_schema, eval_schema

    params = load_params(REPO / "params.yaml")
    files = {"metrics/judge/train/metrics.json": JudgeLive}
    for path in (REPO / "metrics" / "cas").glob("*.json"):
        files[f"metrics/cas/{path.name}"] = cas_schema(path.stem)
    for path in (REPO / "metrics" / "cas").glob("*/train*/metrics.json"):
        files[path.relative_to(REPO).as_posix()] = JudgeLive
    for name, entry in params.models.items():
        if (REPO / "metrics" / name / "eval.json").is_file():
            files[f"metrics/{name}/eval.json"] = eval_schema(entry)
            files[f"metrics/{name}/frontier.json"] = FrontierRows
            files[f"metrics/{name}/train/metrics.json"] = Live
    return files


def test_every_committed_metrics_file_reads_through_its_schema_and_writes_back_the_same(
    tmp_path: Path,
):
    from pipeline.metrics import read_metrics, write_metrics

    files = _schemas()
    assert len(files) >= 20 and files["metrics/fmnist_text/eval.json"].__name__ == "TextEval"
    for name, schema in files.items():
        metrics = read_metrics(REPO / name, schema)
        write_metrics(tmp_path / "out.json", metrics)
        written, committed = (tmp_path / "out.json").read_text(), (REPO / name).read_text()
        if "/train" in name:  # dvclive writes its own layout: the values are the same
            assert json.loads(written) == json.loads(committed), name
        else:  # the stages write through write_metrics: the same bytes
            assert written == committed, name


def test_results_page_quotes_the_metrics():
    page = (REPO / "docs" / "results.md").read_text()
    ev = json.loads((REPO / "metrics" / "fmnist_label" / "eval.json").read_text())
    acc = ev["judge_accuracy_on_samples"]["overall"]
    shown = f"{acc['mean']:.3f} ± {acc['std']:.3f}"
    assert f"(`fmnist_label`) scores {shown} on samples" in page
    sandal = ev["judge_accuracy_on_samples"]["per_class"]["Sandal"]["mean"]
    real = ev["judge_accuracy_on_real_test_per_class"]["Sandal"]
    row = next(line for line in page.splitlines() if line.startswith("| Sandal |"))
    assert row.split(" | ")[1:3] == [f"{real:.2f}", f"{sandal:.2f}"]
    cas_real = json.loads((REPO / "metrics" / "cas" / "real.json").read_text())
    assert f"(cas_real): {cas_real['accuracy_on_real_test']:.3f}." in page
    judge = json.loads((REPO / "metrics" / "judge" / "train" / "metrics.json").read_text())
    assert f"The judge on the real test set: {judge['test']['accuracy']:.3f}." in page
    for png in (REPO / "reports").glob("*/*.png"):
        assert f"(../{png.relative_to(REPO).as_posix()})" in page
    point = ev["frontier"][0]  # each model's frontier is a table; its first point, exactly
    shown = [
        f"{point[k]['mean']:.{d}f} ± {point[k]['std']:.{d}f}"
        for k, d in (("accuracy", 3), ("frechet", 1))
    ]
    at = f"| {point['sampler']} | {point['guidance']:g} | {point['temperature']:g}"
    first = f"{at} | {shown[0]} | {shown[1]} |"
    block = page[page.index("## Guidance frontier") : page.index("## Figures")]
    assert first in block.split("**`fmnist_conv`**")[0]


def test_check_fails_when_a_metric_changes_and_write_fixes_it(tree: Path):
    path = tree / "metrics" / "fmnist_conv" / "eval.json"
    ev = json.loads(path.read_text())
    ev["test_nelbo_nats"] = 199.94
    path.write_text(json.dumps(ev))
    stale = run_script(tree, "--check")
    assert stale.returncode == 1
    assert stale.stderr.strip() == (
        "error: docs/results.md is not current with metrics/: run "
        "python scripts/results_table.py --write"
    )
    assert run_script(tree, "--write").returncode == 0
    row = next(
        line
        for line in (tree / "docs" / "results.md").read_text().splitlines()
        if line.startswith("| test −ELBO")
    )
    assert row.split(" | ")[1:3] == ["237.3", "199.9"]  # fmnist_label, then fmnist_conv
    assert run_script(tree, "--check").returncode == 0


def test_a_guidance_frontier_becomes_a_table(tree: Path):
    path = tree / "metrics" / "fmnist_text_prior" / "eval.json"
    ev = json.loads(path.read_text())
    ev["frontier"] = [
        {
            "sampler": "prior",
            "guidance": 0.0,
            "temperature": 1.0,
            "accuracy": {"mean": 0.652, "std": 0.007},
            "frechet": {"mean": 213.94, "std": 1.7},
            "spread": {"mean": 0.41, "std": 0.002},
        },
        {
            "sampler": "prior",
            "guidance": 2.0,
            "temperature": 0.7,
            "accuracy": {"mean": 0.8, "std": 0.01},
            "frechet": {"mean": 240.0, "std": 2.0},
            "spread": {"mean": 0.3, "std": 0.004},
        },
    ]
    ev["guidance"] = {"w": 2.0, "temperature": 0.7, "sampler": "prior"}
    ev["conditions"] |= {"guidance": 2.0, "temperature": 0.7}
    path.write_text(json.dumps(ev))
    assert run_script(tree, "--write").returncode == 0
    page = (tree / "docs" / "results.md").read_text()
    block = page[page.index("## Guidance frontier") : page.index("## Figures")]
    assert "**`fmnist_text_prior`**" in block
    # the CAS column comes from metrics/cas/fmnist_text_prior.json, matched by (sampler, w, T)
    cas = json.loads((tree / "metrics" / "cas" / "fmnist_text_prior.json").read_text())
    at_w0 = next(
        q["cas"]
        for q in cas["frontier"]
        if (q["sampler"], q["guidance"], q["temperature"]) == ("prior", 0, 1)
    )
    assert "| sampler | w | T | accuracy | FD | spread | CAS |" in block
    row = f"| prior | 0 | 1 | 0.652 ± 0.007 | 213.9 ± 1.7 | 0.410 ± 0.002 | {at_w0:.3f} |"
    assert row in block
    assert "| prior | 2 | 0.7 | 0.800 ± 0.010 | 240.0 ± 2.0 | 0.300 ± 0.004 | – |" in block
    assert "Chosen on validation data: prior, w 2, T 0.7." in block


@pytest.mark.parametrize(
    ("key", "value", "refused"),
    [("w", 0.0, "frontier[0].guidance: Field required"), ("new_key", 5, "frontier[0].new_key")],
)
def test_a_frontier_point_in_another_spelling_or_with_another_key_is_refused(
    tree: Path, key, value, refused
):
    """One schema: `w` for `guidance` is no alternative spelling, and an unknown key is no new
    column; either is one line naming the file and the key, and nothing is written."""
    path = tree / "metrics" / "fmnist_text_prior" / "eval.json"
    page = (tree / "docs" / "results.md").read_bytes()
    ev = json.loads(path.read_text())
    point = ev["frontier"][0]
    if key == "w":
        del point["guidance"]
    point[key] = value
    path.write_text(json.dumps(ev))
    done = run_script(tree, "--write")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"error: metrics/fmnist_text_prior/eval.json: {refused}")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert (tree / "docs" / "results.md").read_bytes() == page


def test_each_frontier_point_gets_its_cas_from_the_cas_file(tree: Path):
    path = tree / "metrics" / "cas" / "fmnist_conv.json"
    cas = json.loads(path.read_text())
    points = json.loads((tree / "metrics" / "fmnist_conv" / "eval.json").read_text())["frontier"]
    cas["frontier"] = [
        {"sampler": q["sampler"], "guidance": q["guidance"], "temperature": q["temperature"]}
        | {"cas": 0.5 + i / 100}
        for i, q in enumerate(points)
    ]
    cas["frontier_conditions"] = {"training_images": 10_000, "epochs": 1, "sample_seed": 0}
    path.write_text(json.dumps(cas))
    assert run_script(tree, "--write").returncode == 0
    page = (tree / "docs" / "results.md").read_text()
    block = page[page.index("**`fmnist_conv`**") : page.index("## Figures")]
    assert "| sampler | w | T | accuracy | FD | spread | CAS |" in block
    rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[-1] for row in rows[1 : 1 + len(points)]] == [
        f"{0.5 + i / 100:.3f} |" for i in range(len(points))
    ]
    assert "trained on 10,000 samples of that point only" in block


def test_the_readme_results_block_is_generated_and_checked(tree: Path):
    shutil.copy(REPO / "README.md", tree / "README.md")
    assert run_script(tree, "--check").returncode == 0
    text = (tree / "README.md").read_text()
    block = text[text.index("<!-- results:begin -->") : text.index("<!-- results:end -->")]
    base = json.loads((tree / "metrics" / "fmnist_label" / "eval.json").read_text())
    acc = base["judge_accuracy_on_samples"]["overall"]
    assert f"| {acc['mean']:.3f} ± {acc['std']:.3f} |" in block  # the paper's model's row
    (tree / "README.md").write_text(text.replace(block, block.replace("±", "+/-", 1)))
    stale = run_script(tree, "--check")
    assert stale.returncode == 1 and "README.md is not current" in stale.stderr
    assert run_script(tree, "--write").returncode == 0
    assert (tree / "README.md").read_text() == text


def test_readme_is_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"


def test_readme_commands_are_the_ones_ci_and_setup_run():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    assert blocks[:2] == [MAIN_COMMAND + "\n", TEST_COMMAND + "\n"]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1] == TEST_COMMAND
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "python3 -m venv .venv" in setup
    assert re.search(r"\.venv/bin/python -m pip install -q -e '\.\[dev(,\w+)*\]'", setup)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'"dvc>=[\d.]+"', pyproject)  # `dvc repro` runs from the venv
    assert re.search(r'dev = \[[^\]]*"pytest>=', pyproject)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def test_every_relative_link_resolves():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert len(pages) >= 8
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                allowed = dest.parent == REPO / "docs" and dest.name in PAGES_WRITTEN_ELSEWHERE
                if not allowed:
                    broken.append(f"{page.relative_to(REPO)}: {target}")
                continue
            if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert broken == []


def test_link_check_sees_a_broken_link():
    text = "[a](docs/nowhere.md) ![b](reports/x.png) [c](https://example.org) [d](#top)"
    assert LINK.findall(text) == ["docs/nowhere.md", "reports/x.png", "https://example.org", "#top"]
    assert _slug("COCO evaluation (paper §3.2)") == "coco-evaluation-paper-32"
    assert _slug("Stability at the paper's settings: what we changed and why") == (
        "stability-at-the-papers-settings-what-we-changed-and-why"
    )
