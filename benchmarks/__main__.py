"""``python -m benchmarks [--quick] [NAME ...]``: run benchmark groups and print Markdown tables."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import ceiling, env
from benchmarks.context import Context
from benchmarks.groups import GROUPS
from benchmarks.harness import describe_exception, is_missing_feature, note


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Side-by-side benchmarks of xetrack_c. Groups: " + ", ".join(GROUPS) + ".")
    parser.add_argument("groups", nargs="*", metavar="NAME",
                        help="groups to run (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 3 repetitions (CI; a few minutes on 2 cores)")
    parser.add_argument("--reps", type=int, default=None,
                        help="repetitions per series (default 5, or 3 with --quick)")
    parser.add_argument("--tmpdir", default=None,
                        help="where benchmark files go (default: the system temp dir unless it "
                             "is a memory file system)")
    parser.add_argument("--report", default=None, metavar="FILE",
                        help="also write a Markdown report (machine, command, tables) to FILE")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="also plot the scaling runs to PNG (needs matplotlib)")
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a series failed (skips never count)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.groups if name not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    return args


def run_group(name: str, ctx: Context) -> bool:
    """Run one group; a group that cannot even be imported or crashes is reported, not raised.
    Returns False when it failed."""
    print(f"\n## {name}\n", flush=True)
    started = time.perf_counter()
    try:
        module = importlib.import_module(GROUPS[name])
        module.run(ctx)
    except Exception as exc:  # noqa: BLE001 - one broken group must not stop the others
        if is_missing_feature(exc):
            note(f"skip: {name}: {describe_exception(exc)}")
            return True
        note(f"FAILED: {name}: {describe_exception(exc)}")
        traceback.print_exc(file=sys.stderr)
        return False
    finally:
        print(f"_{name} took {time.perf_counter() - started:.0f} s_\n", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the requested groups; return the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name, module in GROUPS.items():
            doc = (importlib.import_module(module).__doc__ or "").strip().split("\n\n")[0]
            summary = " ".join(doc.split()).removeprefix(f"{name}: ")
            print(f"{name:9} {summary[:110]}{'...' if len(summary) > 110 else ''}")
        return 0
    names = args.groups or list(GROUPS)
    reps = args.reps or (3 if args.quick else 5)
    temp_root = env.choose_temp_root(args.tmpdir)
    workdir = Path(tempfile.mkdtemp(prefix="xetrack_c-bench-", dir=temp_root))
    machine = env.describe_machine(temp_root)
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(f"# xetrack_c benchmarks\n\n`{command.strip()}`\n\n{machine.markdown()}\n"
          f"- repetitions: {reps} per series, interleaved (A B A B ...)\n", flush=True)
    if machine.temp_mount.fstype in env.MEMORY_FILESYSTEMS:
        note(f"note: {temp_root} is on {machine.temp_mount.fstype}: disk costs are not measured")
    ctx = Context(quick=args.quick, reps=reps, workdir=workdir, ceiling=ceiling.build(workdir))
    if ctx.ceiling.binary is None:
        note(f"skip: C ceiling: {ctx.ceiling.reason}")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    ok = True
    try:
        for name in names:
            ok = run_group(name, ctx) and ok
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - started
    load = (load_before, os.getloadavg()[0])
    print(f"_all groups took {total:.0f} s; 1-minute load average {load[0]:.1f} at the start, "
          f"{load[1]:.1f} at the end_", flush=True)
    plot_path = Path(args.plot) if args.plot else None
    if plot_path is not None:
        from benchmarks.plot import plot_scaling

        note(plot_scaling(ctx, plot_path))
    if args.report:
        from benchmarks.docs import write_report

        write_report(Path(args.report), ctx, machine, command.strip(), reps, total, plot_path,
                     load)
        note(f"report written to {args.report}")
    failed = any(result_failed(table) for table in ctx.tables) or not ok
    return 1 if (args.strict and failed) else 0


def result_failed(table: object) -> bool:
    """Whether a printed table holds a failed series."""
    from benchmarks.harness import FAILED

    for row in getattr(table, "rows", []):
        results = [row.subject, *row.peers, row.limit.result if row.limit else None]
        if any(r is not None and r.status == FAILED for r in results):
            return True
    return False


if __name__ == "__main__":
    sys.exit(main())
