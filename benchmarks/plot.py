"""The scaling runs as a PNG (matplotlib, optional): one panel per scaling study."""

from __future__ import annotations

from pathlib import Path

from benchmarks.context import Context

Y_LABELS = {
    "log: cost per row vs columns": "seconds per row",
    "read: to_df() time vs rows": "seconds per to_df()",
    "executor: cost per task vs tasks": "seconds per task",
}
X_LABELS = {
    "log: cost per row vs columns": "columns",
    "read: to_df() time vs rows": "rows",
    "executor: cost per task vs tasks": "tasks",
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
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        curves: dict[str, list[tuple[float, float, float, float]]] = {}
        for point in ctx.scaling[panel]:
            result = point.result
            curves.setdefault(point.series, []).append(
                (point.size, result.median_per_op, result.min_per_op, result.max_per_op))
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
