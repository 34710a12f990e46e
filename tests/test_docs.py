"""The documentation: the README stays short, every link resolves, nothing cites a file that is not in the tree,
the generated reference pages are current, the development page's map names every module there is, and every
example spec is valid."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PATH = re.compile(r"(?<![\w/<.-])((?:docs|controller|agent|workloads|tests|benchmarks|examples|deploy)/[\w./-]*\w)")
OTHER_PROJECTS = ("Shaker", "Locust", "PerfKitBenchmarker", "locust's", "Shaker's")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors, fenced = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^#{1,6} (.+)$", line)):
            anchors.add(_slug(match.group(1)))
    return anchors


def test_the_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def _tracked() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    return [ROOT / name for name in listed.stdout.split() if (ROOT / name).is_file()]


def test_nothing_cites_a_file_that_is_not_in_the_tree() -> None:
    missing = set()
    for path in _tracked():
        if path.suffix not in {".py", ".md", ".yaml", ".toml", ".service", ".example"} and path.name != "Makefile":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for cited in PATH.findall(line):
                if any(name in line for name in OTHER_PROJECTS):
                    continue
                if not (ROOT / cited.rstrip(".")).exists():
                    missing.add(f"{path.relative_to(ROOT)}:{number}: {cited}")
    assert not missing, "\n".join(sorted(missing))


def test_the_generated_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for name, render in generate.PAGES.items():
        committed = (generate.REFERENCE / name).read_text(encoding="utf-8")
        assert committed == render(), f"docs/reference/{name} is stale: run `make docs`"


def test_the_development_page_names_every_module() -> None:
    page = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    modules = [
        p
        for package in ("controller", "agent", "workloads")
        for p in (ROOT / package).rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    ]
    unnamed = [str(p.relative_to(ROOT)) for p in modules if p.parent.name != "workloads" and p.stem not in page]
    assert not unnamed, f"docs/development.md does not mention: {', '.join(unnamed)}"


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_is_valid(example: Path) -> None:
    from controller.spec import load

    load(example)
