"""The install instructions work: xetrack_c is not on a package index, so no page tells a
reader to ``pip install xetrack_c`` from one, every page with a pip command links to the
install page, and every extra the docs or error messages name exists in pyproject.toml."""

from __future__ import annotations

import re
import tomllib

from conftest import ROOT

PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
SOURCES = sorted((ROOT / "xetrack_c").rglob("*.py"))
EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
             ["project"]["optional-dependencies"])

# xetrack_c[dask], '.[test]', ...whl[process], and prose: the `progress` extra
EXTRA_NAMES = [re.compile(r"(?:xetrack_c|\.whl|[\s'\"]\.)\[([\w,\s-]+)\]"),
               re.compile(r"the `(\w+)` extra"),
               re.compile(r"^\| `\[(\w+)\]` \|", re.M)]
FROM_AN_INDEX = re.compile(r"pip install\s+['\"]?xetrack_c(?![\w.-])")


def extras_named(text: str) -> set:
    names = set()
    for pattern in EXTRA_NAMES:
        for match in pattern.findall(text):
            names.update(part.strip() for part in match.split(","))
    return names


def test_every_named_extra_exists():
    named = {}
    for path in PAGES + SOURCES:
        for extra in extras_named(path.read_text(encoding="utf-8")):
            named.setdefault(extra, path.relative_to(ROOT).as_posix())
    assert {"dask", "process", "test", "docs"} <= set(named)  # the scan finds them
    unknown = {extra: where for extra, where in named.items() if extra not in EXTRAS}
    assert not unknown, f"extras named but missing from pyproject.toml: {unknown}"


def test_install_page_lists_every_extra():
    assert extras_named((ROOT / "docs" / "install.md").read_text(encoding="utf-8")) >= EXTRAS


def test_no_page_installs_from_an_index():
    offenders = [path.name for path in PAGES + SOURCES
                 if FROM_AN_INDEX.search(path.read_text(encoding="utf-8"))]
    assert not offenders


def test_pages_with_pip_commands_link_the_install_page():
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        if path.name == "install.md" or "pip install" not in text:
            continue
        assert re.search(r"\]\((?:\.\./|docs/)?install\.md(?:#[\w-]+)?\)", text), (
            f"{path.relative_to(ROOT)} shows a pip command without linking install.md")


def test_the_scans_catch_what_they_look_for():
    assert extras_named("pip install 'xetrack_c[assets,dask]' and the `gpu` extra") == {
        "assets", "dask", "gpu"}
    assert FROM_AN_INDEX.search("pip install xetrack_c[process]")
    assert FROM_AN_INDEX.search("pip install 'xetrack_c'")
    assert not FROM_AN_INDEX.search("pip install xetrack_c-0.1.0.tar.gz")
