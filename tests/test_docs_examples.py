"""The docs pages show their example code in the page itself, so a page reads the same on a
code host as on the built site, and each such code block stays identical to the example
file it is titled with (``python title="examples/x.py"``, or ``"examples/x.py [name]"`` for
the part of the file between ``# --8<-- [start:name]`` and ``# --8<-- [end:name]``,
dedented).  Change the example, then paste it into the page: this test says where."""

from __future__ import annotations

import re
import textwrap

import pytest
from conftest import ROOT

PAGES = sorted((ROOT / "docs").rglob("*.md"))
TITLED_BLOCK = re.compile(r'^```python title="(examples/[^"\s]+)(?: \[(\w+)\])?"\n(.*?)^```$',
                          re.M | re.S)


def _blocks():
    found = []
    for page in PAGES:
        for path, section, code in TITLED_BLOCK.findall(page.read_text(encoding="utf-8")):
            found.append((page.relative_to(ROOT).as_posix(), path, section, code))
    return found


BLOCKS = _blocks()


def example_code(path: str, section: str = "") -> str:
    """The example file's text, or its dedented section ``section``."""
    text = (ROOT / path).read_text(encoding="utf-8")
    if not section:
        return text
    match = re.search(rf"^[ \t]*# --8<-- \[start:{section}\]\n(.*?)^[ \t]*# --8<-- "
                      rf"\[end:{section}\]\n", text, re.M | re.S)
    assert match, f"{path} has no section {section!r}"
    return textwrap.dedent(match.group(1))


def test_no_page_includes_a_file():
    # an include (--8<-- "file") shows as that line on a code host, not as the code
    offenders = [page.name for page in PAGES
                 if re.search(r'^\s*--8<--\s', page.read_text(encoding="utf-8"), re.M)]
    assert not offenders


def test_pages_show_the_examples():
    shown = {(page, path) for page, path, _, _ in BLOCKS}
    for page, path in [("docs/quickstart.md", "examples/quickstart.py"),
                       ("docs/analysis.md", "examples/analysis_walkthrough.py"),
                       ("docs/guides/llm-benchmark.md", "examples/llm_benchmark.py"),
                       ("docs/guides/long-batches.md", "examples/long_batch.py"),
                       ("docs/guides/rerun-safety.md", "examples/rerun_safe_benchmark.py"),
                       ("docs/guides/two-tables.md", "examples/two_table_benchmark.py")]:
        assert (page, path) in shown, f"{page} does not show {path}"


@pytest.mark.parametrize("page,path,section,code", BLOCKS,
                         ids=[f"{b[0]}:{b[1]}{':' + b[2] if b[2] else ''}" for b in BLOCKS])
def test_page_code_matches_its_example(page, path, section, code):
    expected = example_code(path, section)
    assert code.rstrip("\n") == expected.rstrip("\n"), (
        f"{page}: the block titled {path}{' [' + section + ']' if section else ''} differs "
        f"from the file; paste the file's current code into the page")


def stale_blocks(text: str) -> list:
    """Titles of the page's example blocks that differ from their files."""
    return [f"{path} [{section}]" if section else path
            for path, section, code in TITLED_BLOCK.findall(text)
            if code.rstrip("\n") != example_code(path, section).rstrip("\n")]


def test_a_stale_block_is_caught():
    page = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    assert stale_blocks(page) == []
    edited = page.replace("tracker.log(", "tracker.log_batch(", 1)
    assert edited != page and stale_blocks(edited) == ["examples/quickstart.py"]
    analysis = (ROOT / "docs" / "analysis.md").read_text(encoding="utf-8")
    edited = analysis.replace('metrics = Reader(db, table="metrics")', 'metrics = None', 1)
    assert edited != analysis and stale_blocks(edited) == [
        "examples/analysis_walkthrough.py [load]"]
