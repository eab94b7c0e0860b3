"""Run xetrack 0.7's own test suite against xetrack_c and against xetrack itself, side by side.

The tests are copied to a temporary directory and each test file runs in its own pytest
process (so one hanging file is stopped by its timeout and the others still report), twice:

- ``xetrack_c``: this interpreter (or ``--xetrack-c-python``) with the ``xetrack`` re-export
  package beside this script and the repository root first on ``PYTHONPATH``;
- ``xetrack``: the interpreter of an environment where xetrack 0.7 is installed
  (``--xetrack-python``), with an empty ``PYTHONPATH``.

It prints one row per test file (passed / failed / errors / skipped for each side), the
totals, and the ids of the tests that do not pass under xetrack_c. See README.md beside it.

Usage::

    python tools/xetrack_suite/run.py [TESTS_DIR_OR_CHECKOUT] [--git-dir DIR] [-k EXPR]
        [--files a_test.py ...] [--xetrack-python PY] [--timeout S] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DEFAULT_TESTS = Path("/tmp/xetrack-src/tests")
DEFAULT_XETRACK_PYTHON = "/opt/xt07venv/bin/python"
SIDES = ("xetrack_c", "xetrack")


@dataclass
class FileResult:
    """The outcome of one test file on one side."""

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    note: str = ""  # "timeout" or "no report: <why>" when pytest gave no result file
    not_passing: List[str] = field(default_factory=list)


def copy_tests(source: Optional[Path], git_dir: Optional[Path], into: Path) -> Path:
    """Put xetrack's ``tests`` package under ``into`` and return its path.

    ``source`` is a tests directory or a checkout holding one; ``git_dir`` is a git directory
    (a bare mirror works) whose ``HEAD:tests`` is extracted instead.
    """
    target = into / "tests"
    if git_dir is not None:
        archive = subprocess.run(
            ["git", "--git-dir", str(git_dir), "archive", "--format=tar", "HEAD", "tests"],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(into, filter="data")
        return target
    source = source or DEFAULT_TESTS
    if (source / "tests").is_dir():
        source = source / "tests"
    if not source.is_dir():
        raise SystemExit(f"run.py: no tests directory at {source}: pass one, or --git-dir")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def make_checkout(workdir: Path) -> None:
    """Make ``workdir`` a git work tree with one commit: xetrack's tests run from its
    checkout and read the commit of the directory they run in (git_test.py, git_root='.')."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "suite", "GIT_AUTHOR_EMAIL": "suite@localhost",
           "GIT_COMMITTER_NAME": "suite", "GIT_COMMITTER_EMAIL": "suite@localhost"}
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "xetrack's tests"]):
        subprocess.run(["git", "-C", str(workdir), *command], check=True, env=env,
                       capture_output=True)


def side_command(side: str, args: argparse.Namespace) -> tuple[str, Dict[str, str]]:
    """The interpreter and environment that run pytest for one side."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if side == "xetrack_c":
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO_ROOT)])
        return args.xetrack_c_python, env
    return args.xetrack_python, env


def failure_reason(problem: ElementTree.Element) -> str:
    """One line saying why: the last ``E   ...`` line of the traceback, else the message."""
    details = [line[1:].strip() for line in (problem.text or "").splitlines()
               if line.startswith("E ")]
    lines = details or (problem.get("message") or "").strip().splitlines() or ["?"]
    return lines[-1][:150]


def parse_report(report: Path, test_file: str) -> FileResult:
    """Count the outcomes in a junit XML report of one test file."""
    result = FileResult()
    for case in ElementTree.parse(report).iter("testcase"):
        name = case.get("name", "")
        classname = case.get("classname", "")
        test_id = f"{test_file}::{name}" if classname else f"{test_file} (collection)"
        outcome = {child.tag: child for child in case}
        problem = outcome.get("error", outcome.get("failure"))
        reason = f" - {failure_reason(problem)}" if problem is not None else ""
        if "error" in outcome:
            result.errors += 1
            result.not_passing.append(f"ERROR {test_id}{reason}")
        elif "failure" in outcome:
            result.failed += 1
            result.not_passing.append(f"FAILED {test_id}{reason}")
        elif "skipped" in outcome:
            result.skipped += 1
        else:
            result.passed += 1
    return result


def run_file(side: str, test_file: str, workdir: Path, args: argparse.Namespace) -> FileResult:
    """Run one test file on one side in its own pytest process."""
    python, env = side_command(side, args)
    report = workdir / f"report-{side}-{test_file}.xml"
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
               f"tests/{test_file}"]
    if args.k:
        command += ["-k", args.k]
    try:
        subprocess.run(command, cwd=workdir, env=env, timeout=args.timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return FileResult(errors=1, note="timeout", not_passing=[f"TIMEOUT {test_file}"])
    if not report.exists():
        return FileResult(errors=1, note="no report", not_passing=[f"NO REPORT {test_file}"])
    return parse_report(report, test_file)


def cell(result: FileResult) -> str:
    """``passed/failed/errors/skipped`` for the table."""
    text = f"{result.passed}/{result.failed}/{result.errors}/{result.skipped}"
    return f"{text} {result.note}".strip()


def print_table(results: Dict[str, Dict[str, FileResult]], files: List[str]) -> None:
    """The per-file Markdown table and the totals."""
    print("| file | xetrack_c (shim) p/f/e/s | xetrack 0.7 p/f/e/s |")
    print("|---|---|---|")
    totals = {side: FileResult() for side in SIDES}
    for test_file in files:
        row = [cell(results[side][test_file]) for side in SIDES]
        print(f"| {test_file} | {row[0]} | {row[1]} |")
        for side in SIDES:
            for name in ("passed", "failed", "errors", "skipped"):
                setattr(totals[side], name,
                        getattr(totals[side], name) + getattr(results[side][test_file], name))
    print(f"| **total** | {cell(totals['xetrack_c'])} | {cell(totals['xetrack'])} |")


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the arguments, run both sides, print the comparison; 0 unless nothing ran."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tests", nargs="?", type=Path,
                        help=f"xetrack's tests directory or a checkout (default {DEFAULT_TESTS})")
    parser.add_argument("--git-dir", type=Path, help="take tests/ from HEAD of this git directory")
    parser.add_argument("--xetrack-python", default=DEFAULT_XETRACK_PYTHON,
                        help="interpreter with xetrack 0.7 installed")
    parser.add_argument("--xetrack-c-python", default=sys.executable,
                        help="interpreter that runs the xetrack_c side (default: this one)")
    parser.add_argument("--files", nargs="+", help="only these test files (names, e.g. reader_test.py)")
    parser.add_argument("-k", help="pytest -k expression, passed to both sides")
    parser.add_argument("--side", choices=SIDES, action="append",
                        help="run only this side (repeatable; default both)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per test file")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    sides = args.side or list(SIDES)

    with tempfile.TemporaryDirectory(prefix="xetrack-suite-") as tmp:
        workdir = Path(tmp)
        tests_dir = copy_tests(args.tests, args.git_dir, workdir)
        # An ini file of its own keeps pytest from reading any configuration above the copy.
        (workdir / "pytest.ini").write_text("[pytest]\n")
        make_checkout(workdir)
        files = sorted(p.name for p in tests_dir.glob("*_test.py"))
        if args.files:
            files = [f for f in files if f in set(args.files)]
        if not files:
            print("run.py: no test files selected", file=sys.stderr)
            return 2
        results: Dict[str, Dict[str, FileResult]] = {side: {} for side in SIDES}
        for side in SIDES:
            for test_file in files:
                if side in sides:
                    results[side][test_file] = run_file(side, test_file, workdir, args)
                else:
                    results[side][test_file] = FileResult(note="not run")
                print(f"{side:9} {test_file:35} {cell(results[side][test_file])}",
                      file=sys.stderr, flush=True)

    print_table(results, files)
    failing = [t for f in files for t in results["xetrack_c"][f].not_passing]
    if "xetrack_c" in sides:
        print(f"\nNot passing under xetrack_c ({len(failing)}):")
        for test_id in failing:
            print(f"  {test_id}")
    if args.json:
        args.json.write_text(json.dumps(
            {side: {f: asdict(r) for f, r in per.items()} for side, per in results.items()},
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
