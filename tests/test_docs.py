"""The documentation stands on its own: nothing in the repository cites material that lives outside it, and every
relative link of the README and ``docs/`` leads to a file (and heading) that exists.

Facts about the official model are cited from ``docs/architecture.md`` and facts about the datasets from
``docs/datasets-and-evaluation.md`` (see CONTRIBUTING.md, *Style*).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist", ".eggs", ".pytest_cache",
                ".ruff_cache"}
SCANNED_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt"}
# Specification files of the workplace the port was written in, and the folder that held them. Cited any way other
# than as a path under docs/, they point outside the repository. The names are assembled so this file does not match.
OUTSIDE_NAMES = "|".join(("data", "model", "datasets"))
OUTSIDE_REFERENCE = re.compile(r"(?<![\w.-])(?<!docs/)(?:" + OUTSIDE_NAMES + r")\.md\b"
                               + r"|\.\./" + "shared|" + "shared/spec")
MARKDOWN_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def repository_files():
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative.parts[:-1]):
            continue
        if path.is_file() and path.suffix in SCANNED_SUFFIXES:
            yield path


def documentation_files():
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation (``§``, dots, backticks) removed, spaces -> ``-``."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen, in_code = set(), {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6}\s+(.*)", line)):
            anchor = github_anchor(match.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def test_no_reference_to_files_outside_the_repository():
    offenders = []
    for path in repository_files():
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE_REFERENCE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not offenders, ("cite docs/architecture.md or docs/datasets-and-evaluation.md (same section numbers) "
                           "instead of files outside the repository:\n" + "\n".join(offenders))


def test_the_pattern_catches_outside_references_and_spares_docs_paths():
    name = "data" + ".md"
    assert OUTSIDE_REFERENCE.search(f"see {name} §4.4") and OUTSIDE_REFERENCE.search(f"(``{name}``)")
    assert OUTSIDE_REFERENCE.search("/work/" + "shared/spec/" + name) and OUTSIDE_REFERENCE.search("../" + "shared")
    assert OUTSIDE_REFERENCE.search("model" + ".md §5.1") and OUTSIDE_REFERENCE.search("datasets" + ".md")
    assert not OUTSIDE_REFERENCE.search("docs/datasets-and-evaluation.md §4.4, docs/architecture.md §5.1")
    assert not OUTSIDE_REFERENCE.search("model_card.md, README.md, docs/" + name)


@pytest.mark.parametrize("path", documentation_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # links inside code blocks are not links
    broken = []
    for target in MARKDOWN_LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {linked.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


def test_docs_exist_and_are_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{path.name})" in readme, f"README.md does not link docs/{path.name}"
