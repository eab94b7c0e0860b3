"""``xt report`` and ``Reader.report``: one self-contained HTML file, checked as text, as
parsed HTML, and as Chromium renders it (headless, when installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import child_env

pytestmark = pytest.mark.slow  # run_multiple, matplotlib, xt and Chromium processes

MODELS = {"small": 1.0, "medium": 1.5, "large": 2.0}
EPOCHS = 5
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# A URL the viewer's browser would fetch: an attribute or CSS that loads from the network.
NETWORK = re.compile(r"""(src|href|xlink:href|action)\s*=\s*["']?\s*(https?:)?//|@import|"""
                     r"""url\(\s*["']?\s*(https?:)?//""", re.IGNORECASE)


def fail_on(value: int) -> int:
    """Tracked below: raises for 3, so its row carries an error."""
    if value == 3:
        raise ValueError("three is not allowed")
    return value * 2


def diverge(config: dict) -> dict:
    """A run_multiple task that fails for a large learning rate."""
    if config["lr"] > 0.5:
        raise ValueError("lr too large: diverged")
    return {"score": 1 - config["lr"]}


@pytest.fixture(scope="module")
def report_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Learning curves of three models (with the environment recorded), tracked calls of
    which one raised, and a run_multiple batch with one failed experiment."""
    from xetrack_c import ExperimentSpec, Tracker, run_multiple

    path = str(tmp_path_factory.mktemp("report") / "runs.db")
    for model, factor in MODELS.items():
        tracker = Tracker(path, params={"model": model, "lr": 0.01}, log_environment=True)
        for epoch in range(1, EPOCHS + 1):
            tracker.log({"epoch": epoch, "loss": 1 / (epoch * factor), "acc": 0.5 + 0.05 * epoch})
        tracker.close()
    calls = Tracker(path, table="calls", raise_on_error=False, warnings=False)
    for value in range(5):
        calls.track(fail_on, args=[value])
    calls.close()
    specs = [ExperimentSpec(function=diverge, config={"lr": lr}, name=f"lr-{lr}")
             for lr in (0.1, 0.9)]
    results = run_multiple(specs, db=path)
    assert [r.status for r in results] == ["completed", "failed"]
    return path


@pytest.fixture(scope="module")
def report_html(report_db: str) -> Path:
    from xetrack_c import Reader

    path = Path(report_db).with_suffix(".html")
    assert Reader(report_db).report(path) == str(path)
    return path


class Tables(HTMLParser):
    """The tables of a document by id: header cells and body rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: Dict[str, Dict[str, List]] = {}
        self.svgs = 0
        self.scripts: List[str] = []
        self._table = None
        self._row: List[str] = []
        self._cell = None
        self._in_body = False
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", f"#{len(self.tables)}"),
                                                 {"head": [], "rows": [],
                                                  "class": attrs.get("class", "")})
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "svg":
            self.svgs += 1
        elif tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._table is not None:
            (self._table["rows"] if self._in_body else self._table["head"]).extend(
                [self._row] if self._in_body else self._row)
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_script:
            self.scripts[-1] += data


def parse(text: str) -> Tables:
    parser = Tables()
    parser.feed(text)
    return parser


def column(table: Dict[str, List], name: str) -> List[str]:
    index = table["head"].index(name)
    return [row[index] for row in table["rows"]]


def check_document(doc: Tables) -> None:
    """What the report holds, whether read from the file or from Chromium's DOM."""
    listing = doc.tables["tables-list"]
    counts = dict(zip(column(listing, "table"), column(listing, "rows"), strict=True))
    assert counts == {"default": "15", "calls": "5", "experiments": "2"}
    runs = doc.tables["runs-default"]
    assert sorted(column(runs, "model")) == sorted(MODELS)
    assert set(column(runs, "rows")) == {str(EPOCHS)} and set(column(runs, "status")) == {"ok"}
    assert all(float(value) >= 0 for value in column(runs, "duration_s"))
    assert sorted(column(doc.tables["runs-calls"], "status")) == ["failed (1 error)"]
    experiments = doc.tables["runs-experiments"]
    assert dict(zip(column(experiments, "name"), column(experiments, "status"), strict=True)) \
        == {"lr-0.1": "completed", "lr-0.9": "failed"}
    loss = doc.tables["summary-default-loss"]
    assert len(loss["rows"]) == 3
    assert sorted(column(loss, "last")) == ["0.1", "0.133333", "0.2"]  # 1 / (5 * factor)
    assert set(column(loss, "count")) == {str(EPOCHS)}
    assert "summary-default-acc" in doc.tables
    assert not any(name.startswith("summary-default-epoch") for name in doc.tables)
    call_failures = doc.tables["failures-calls"]
    assert len(call_failures["rows"]) == 1
    assert "three is not allowed" in column(call_failures, "error")[0]
    failed = doc.tables["failures-experiments"]
    assert column(failed, "name") == ["lr-0.9"] and "diverged" in column(failed, "error")[0]
    environment = doc.tables["environment-default"]
    assert len(environment["rows"]) == 3
    assert set(column(environment, "env_python")) == {
        ".".join(map(str, sys.version_info[:3]))}
    assert doc.svgs == 3  # loss and acc against epoch, function_time against row order
    assert all(" sortable" in f" {t['class']}" for t in doc.tables.values())


def test_report_file(report_html: Path):
    text = report_html.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    check_document(parse(text))
    assert "<h3>default (against epoch)</h3>" in text
    assert "<h3>calls (against the row&#x27;s position in its run)</h3>" in text
    assert 10_000 < report_html.stat().st_size < 300_000


def test_no_network_references(report_html: Path):
    text = report_html.read_text(encoding="utf-8")
    assert not NETWORK.search(text)
    # Stricter than needed (a namespace is not fetched), and what the report guarantees:
    # matplotlib's metadata and namespace URLs are taken out, so no URL is left at all.
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "<img" not in text and "<?xml" not in text
    assert NETWORK.search('<img src="https://example.com/a.png">')  # the check can fail
    assert NETWORK.search("<style>@import 'x.css'</style>")


def test_sort_script_is_inline(report_html: Path):
    doc = parse(report_html.read_text(encoding="utf-8"))
    assert len(doc.scripts) == 1
    assert 'querySelectorAll("table.sortable th")' in doc.scripts[0]
    assert "addEventListener(\"click\"" in doc.scripts[0]


def test_xt_report_and_missing_matplotlib(report_db: str, tmp_path: Path):
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    env = child_env([str(tmp_path / "shadow")])
    env["PYTHONPATH"] = f"{tmp_path / 'shadow'}:{env['PYTHONPATH']}"
    proc = subprocess.run([sys.executable, "-m", "xetrack_c", "report", report_db, "-o",
                           "plain.html", "--title", "No charts"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Wrote plain.html"
    text = (tmp_path / "plain.html").read_text(encoding="utf-8")
    assert "<title>No charts</title>" in text
    assert "Charts need matplotlib" in text and "<code>report</code> extra" in text
    doc = parse(text)
    assert doc.svgs == 0
    for table in ("tables-list", "runs-default", "summary-default-loss", "failures-calls"):
        assert doc.tables[table]["rows"], table


def test_xt_report_errors(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "xetrack_c", "report", "missing.db"],
                          cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "no such file: 'missing.db'" in proc.stderr
    assert not (tmp_path / "report.html").exists()


def test_import_does_not_load_report():
    code = ("import sys, xetrack_c\nassert 'xetrack_c.report' not in sys.modules\n"
            "assert 'xetrack_c.environment' not in sys.modules\nprint('ok')")
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


def chromium_dom(page: Path) -> str:
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt install chromium)")
def test_rendered_in_chromium(report_html: Path):
    dom = chromium_dom(report_html)
    check_document(parse(dom))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt install chromium)")
def test_click_sorts_in_chromium(report_html: Path, tmp_path: Path):
    """A click on the 'last' header of the loss summary sorts it ascending, a second click
    descending: the inline script runs in a real browser."""
    text = report_html.read_text(encoding="utf-8")
    clicks = ('<script>var h=Array.prototype.find.call(document.querySelectorAll('
              '"#summary-default-loss th"),function(t){return t.textContent==="last"});'
              'h.click();document.body.setAttribute("data-asc",Array.prototype.map.call('
              'document.querySelectorAll("#summary-default-loss tbody tr"),function(r){'
              'return r.cells[h.cellIndex].textContent}).join(","));h.click();</script>')
    page = tmp_path / "clicked.html"
    page.write_text(text.replace("</body>", clicks + "</body>"), encoding="utf-8")
    dom = chromium_dom(page)
    assert 'data-asc="0.1,0.133333,0.2"' in dom
    descending = column(parse(dom).tables["summary-default-loss"], "last")
    assert descending == ["0.2", "0.133333", "0.1"]
    assert re.search(r'<th class="desc">last</th>', dom)


def test_many_failures_and_an_empty_table(tmp_path: Path):
    from xetrack_c import Reader, Tracker
    from xetrack_c.report import MAX_FAILURES

    path = str(tmp_path / "failing.db")
    tracker = Tracker(path, raise_on_error=False, warnings=False)
    for _ in range(MAX_FAILURES + 5):
        tracker.track(fail_on, args=[3])
    tracker.close()
    Tracker(path, table="empty").close()
    text = Path(Reader(path).report(tmp_path / "failing.html")).read_text(encoding="utf-8")
    doc = parse(text)
    assert len(doc.tables["failures-default"]["rows"]) == MAX_FAILURES
    assert f"default: {MAX_FAILURES + 5} <span class=\"note\">(the first {MAX_FAILURES})" in text
    counts = dict(zip(column(doc.tables["tables-list"], "table"),
                      column(doc.tables["tables-list"], "rows"), strict=True))
    assert counts == {"default": str(MAX_FAILURES + 5), "empty": "0"}
    assert column(doc.tables["runs-default"], "status") == [f"failed ({MAX_FAILURES + 5} errors)"]
