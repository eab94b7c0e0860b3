"""`import xetrack_c` stays cheap: it loads none of the heavy standard modules.

The rule (docs/design.md, "Import cost"): the modules that ``import xetrack_c``,
``Tracker(...)`` and ``log()`` load use annotations only under ``from __future__ import
annotations``, import typing names under ``if TYPE_CHECKING:``, and leave ``threading``,
``re``, ``json``, numpy and pandas to the features that need them.  A module that breaks it
shows up here by name, whatever its import costs on this machine.

The child runs with ``-S``: ``site`` (and the ``.pth`` files of installed packages) may
import ``typing`` and ``re`` itself, which would hide what ``import xetrack_c`` pulls in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Set

import xetrack_c

# Not to be loaded by `import xetrack_c`, `Tracker(...)` or `log()`.
FORBIDDEN = frozenset({
    "typing", "re", "collections", "contextlib", "functools", "enum", "threading",
    "dataclasses", "inspect", "json", "pathlib", "tempfile", "subprocess", "importlib.util",
    "numpy", "pandas",
})


def _child(code: str, *flags: str) -> subprocess.CompletedProcess:
    """Run ``code`` in ``python -S`` with the xetrack_c under test importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(xetrack_c.__file__).resolve().parent.parent)
    env.pop("PYTHONSTARTUP", None)
    return subprocess.run([sys.executable, "-S", *flags, "-c", code], env=env,
                          capture_output=True, text=True, timeout=60, check=True)


def _importtime_modules(stderr: str) -> List[str]:
    """Module names of the lines of ``-X importtime``: ``import time: self | cumulative | name``."""
    names = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                names.append(name)
    return names


def _new_modules(code: str) -> Set[str]:
    """Modules in sys.modules after ``code`` that were not there before it."""
    out = _child("import sys\nbefore = set(sys.modules)\n" + code
                 + "\nprint('\\n'.join(sorted(set(sys.modules) - before)))")
    return set(out.stdout.split())


def test_importtime_lists_no_heavy_module() -> None:
    out = _child("import xetrack_c", "-X", "importtime")
    imported = _importtime_modules(out.stderr)
    assert "xetrack_c" in imported and "xetrack_c.tracker" in imported, out.stderr
    assert FORBIDDEN.isdisjoint(imported), sorted(FORBIDDEN.intersection(imported))


def test_tracker_and_log_load_no_heavy_module(tmp_path: Path) -> None:
    db = tmp_path / "cost.db"
    loaded = _new_modules(
        "import xetrack_c\n"
        f"t = xetrack_c.Tracker({str(db)!r}, params={{'lr': 0.1}})\n"
        "t.log({'loss': 0.5, 'name': 'a', 'step': 1})\n"
        "t.log_batch([{'loss': 0.25, 'step': 2}])\n"
        "t.close()")
    assert "xetrack_c.tracker" in loaded
    assert FORBIDDEN.isdisjoint(loaded), sorted(FORBIDDEN.intersection(loaded))
    # The rows really were written by that child.
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute('SELECT lr, loss, step FROM "default" ORDER BY step').fetchall()
    assert rows == [(0.1, 0.5, 1), (0.1, 0.25, 2)]


def test_lazy_names_still_resolve() -> None:
    loaded = _new_modules("import xetrack_c\nprint(xetrack_c.Reader.__name__)")
    assert "xetrack_c.reader" in loaded
