"""The scaling runs as a PNG (matplotlib, optional): one panel per scaling study.

Panels whose name says "rows/s" show rates (rows per second over all writers, higher is
better); the others show seconds per operation."""

from __future__ import annotations

from pathlib import Path

from benchmarks.context import Context

Y_LABELS = {
    "log: cost per row vs columns": "seconds per row",
    "read: to_df() time vs rows": "seconds per to_df()",
    "executor: cost per task vs tasks": "seconds per task",
    "writers: rows/s in all vs threads": "rows/s, all threads together",
    "writers: rows/s in all vs processes": "rows/s, all processes together",
}
X_LABELS = {
    "log: cost per row vs columns": "columns",
    "read: to_df() time vs rows": "rows",
    "executor: cost per task vs tasks": "tasks",
    "writers: rows/s in all vs threads": "threads (one Tracker)",
    "writers: rows/s in all vs processes": "processes (one file)",
}


def plot_scaling(ctx: Context, path: Path) -> str:
    """Draw every recorded scaling curve; returns a line saying what happened."""
    if not ctx.scaling:
        return "plot: no scaling runs were measured; nothing to plot"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "skip: plot: matplotlib is not installed (pip install matplotlib)"
    panels = list(ctx.scaling)
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    figure, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4.5 * nrows), squeeze=False)
    flat = list(axes.flat)
    for axis in flat[len(panels):]:
        axis.set_visible(False)
    for axis, panel in zip(flat, panels, strict=False):
        rate = "rows/s" in panel
        curves: dict[str, list[tuple[float, float, float, float]]] = {}
        for point in ctx.scaling[panel]:
            result = point.result
            values = (result.median_per_op, result.min_per_op, result.max_per_op)
            if rate:  # a rate: the fastest repetition is the highest value
                values = (1.0 / values[0], 1.0 / values[2], 1.0 / values[1])
            curves.setdefault(point.series, []).append((point.size, *values))
        for name, values in curves.items():
            values.sort()
            xs = [v[0] for v in values]
            ys = [v[1] for v in values]
            low = [v[1] - v[2] for v in values]
            high = [v[3] - v[1] for v in values]
            style = "-o" if name.startswith("xetrack_c") else "--s"
            axis.errorbar(xs, ys, yerr=[low, high], fmt=style, capsize=3, label=name)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(panel)
        axis.set_xlabel(X_LABELS.get(panel, "size"))
        axis.set_ylabel(Y_LABELS.get(panel, "seconds"))
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle("xetrack_c scaling (median, min–max bars)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"plot written to {path}"
