"""Accuracy-vs-parameters scatter of a comparison: every complete config a dot (mean over seeds,
with a seed-spread error bar), pruned trials as rings, the Pareto front as a step line, the
parameter budgets as dashed lines, the paper preset as a star."""

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from hydra_plugins.tinycnn_plugins.tinycnn_sweeper import TinycnnOptunaConf  # noqa: E402
from tinycnn.compare import Row  # noqa: E402
from tinycnn.record import write_bytes_atomic  # noqa: E402

DEFAULT_MAX_PARAMS = TinycnnOptunaConf.max_params  # the sweeper's budget, written there once
# What the x axis can show: a row's field, and how the axis and a budget line name it.
AXES = {"params": ("trainable parameters", "params"), "macs": ("MACs per image", "MACs"),
        "peak_kb": ("peak activation memory, int8, batch 1 (KB)", "KB"),
        "flash_kb": ("weights, int8 (KB)", "KB")}


def plot_rows(rows: list[Row], path, budgets=(DEFAULT_MAX_PARAMS,), title: str = "",
              x: str = "params") -> dict:
    """Write the scatter of validation accuracy against x (params, macs, peak_kb or flash_kb)
    to `path` (PNG); returns how many points of each kind were drawn: {"complete": n,
    "pruned": m} (a pruned trial at the accuracy it had when it was stopped)."""
    cost = lambda r: r.get(x)  # noqa: E731
    scored = [r for r in rows if r.val_acc is not None and cost(r) is not None]
    done = [r for r in scored if r.state == "complete"]
    pruned = [r for r in scored if r.state == "pruned"]
    hidden = len(rows) - len(done) - len(pruned)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)

    plain = [r for r in done if not r.pareto and not r.baseline]
    front = sorted((r for r in done if r.pareto), key=cost)
    baselines = [r for r in done if r.baseline]  # the paper's network, or a search's trial 0

    def draw(group, **style):
        if not group:
            return
        xs = [cost(r) for r in group]
        y = [100 * r.val_acc for r in group]
        err = [100 * (r.stats["val_acc"][1] or 0) for r in group]
        ax.errorbar(xs, y, yerr=err if any(err) else None, linestyle="none", capsize=2,
                    gid="points", **style)

    draw(pruned, marker="o", markerfacecolor="none", color="0.6", markersize=5,
         label="pruned (val at stop)")
    seeded = any(r.n > 1 for r in done)
    draw(plain, marker="o", color="0.45", markersize=5, alpha=0.9,
         label="complete (mean ± std over seeds)" if seeded else "complete")
    draw([r for r in front if not r.baseline], marker="o", color="tab:blue", markersize=7,
         label="Pareto-optimal")
    if front:
        # The front as steps: every point to the right and below it is beaten by one on it.
        ax.step([cost(r) for r in front], [100 * r.val_acc for r in front], where="post",
                color="tab:blue", linewidth=1.2, alpha=0.7)
    draw([r for r in baselines if r.paper], marker="*", color="tab:red", markersize=15,
         markeredgecolor="black", label="paper preset")
    draw([r for r in baselines if not r.paper], marker="D", color="tab:orange", markersize=8,
         markeredgecolor="black", label="search baseline (trial 0)")
    if baselines:
        ax.margins(y=0.12)  # room above the highest point for its label, clear of the title
    for r in baselines:
        ax.annotate(f"{'paper' if r.paper else 'baseline'} {cost(r):,.0f}",
                    (cost(r), 100 * r.val_acc), textcoords="offset points",
                    xytext=(0, 10), ha="center", va="bottom", fontsize=8, color="tab:red")
    if budgets:
        right = max(list(budgets) + [cost(r) for r in scored])
        ax.set_xlim(right=right * 1.04)  # keep the budget lines clear of the frame
        for budget, style in zip(sorted(budgets, reverse=True), ["--", ":", "-."] * 9):
            ax.axvline(budget, color="black", linestyle=style, linewidth=1,
                       label=f"budget {budget:,.{1 if x.endswith('_kb') else 0}f} "
                             f"{AXES[x][1]}")

    ax.set_xlabel(AXES[x][0])
    ax.set_ylabel("validation accuracy (%)")
    lo, hi = ax.get_xlim()
    digits = 0 if hi - lo >= 10 else 1 if hi - lo >= 1 else 2  # KB axes span a few units
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.{digits}f}"))
    ax.grid(True, alpha=0.3)
    note = f"{len(done)} complete" + (f", {len(pruned)} pruned" if pruned else "") + \
        (f"; {hidden} failed/infeasible not shown" if hidden else "")
    if title and len(title) > 90:  # several sources: their names would run off the figure
        title = title[:87] + "..."
    ax.set_title(f"{title}\n{note}" if title else note, fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # drawn first, then written atomically: never half a picture
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return {"complete": len(done), "pruned": len(pruned)}
