"""Terminal tables and PNG plots for replay results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conductor.errors import ConfigError


def replay_table(report: dict[str, Any]) -> str:
    lines = [f"{report['prompts']} prompts, {report['seeds']} seed(s); quality bar "
             f"{report['quality_bar']:g} x the strongest model ({report['strongest_model']}): "
             + ", ".join(f"{t} target {v:.3f}" for t, v in report["targets"].items())
             + "".join(f"; {t} floor (min_quality) {v:.3f} per request"
                       for t, v in report.get("min_quality", {}).items())
             + (f"; Conductor starts from the priors in {report['priors_from']}"
                if report.get("priors_from") else "")
             + (f"; the judge scores {report['judge_rate']:g} of answers (more where the "
                "posterior is wide), the rest teach nothing about quality"
                if report.get("judge_rate", 1.0) < 1.0 else ""),
             f"{'policy':<44} {'quality':>8} {'vs strongest':>12} {'cost $':>9} "
             f"{'vs strongest':>12} {'regret':>8} {'tasks below bar':>15}"]
    for name, p in report["policies"].items():
        o = p["overall"]
        lines.append(f"{name[:44]:<44} {o['quality']:>8.3f} {o['quality_vs_strongest']:>12.3f} "
                     f"{o['cost_usd']:>9.3f} {o['cost_vs_strongest']:>12.3f} "
                     f"{o['regret']:>8.1f} {o['task_types_below_bar']:>15.1f}")
    lines.append("")
    lines.append("per task type (quality and cost vs the strongest model; 'met': the realized "
                 "quality reached the target in every seed; second half of the stream in "
                 "brackets):")
    for name, p in report["policies"].items():
        if name.startswith("always:"):
            continue
        cells = []
        for task, o in p["by_task"].items():
            late = p.get("second_half_by_task", {}).get(task)
            met = "met" if o.get("met_target", 0.0) >= 1.0 else "below"
            cells.append(f"{task} {o['quality_vs_strongest']:.3f}/{o['cost_vs_strongest']:.3f} "
                         f"{met}" + (f" [{late['quality_vs_strongest']:.3f}/"
                                     f"{late['cost_vs_strongest']:.3f}]" if late else ""))
        lines.append(f"  {name[:34]:<34} " + "; ".join(cells))
    judge_errs = any(report.get(k) for k in ("judge_flip", "judge_false_positive",
                                             "judge_false_negative", "judge_length_bias",
                                             "judge_noise"))
    if judge_errs:
        scale = (f"calibrated from user labels on {report['user_feedback_rate']:.1%} of "
                 f"requests" if report.get("calibrated") else
                 "no user labels: Conductor learns on the judge's raw scale")
        lines.append("")
        lines.append(f"true vs judged quality per task type ({scale}; Conductor's estimate "
                     "of what it served in brackets):")
        for name, p in report["policies"].items():
            if name.startswith("always:") or name in ("oracle", "random"):
                continue
            cells = []
            for task, o in p["by_task"].items():
                est = o.get("estimated_quality")
                cells.append(f"{task} true {o['quality']:.3f} judged {o['judged_quality']:.3f}"
                             + (f" [{est:.3f}]" if est is not None and est == est else ""))
            lines.append(f"  {name[:34]:<34} " + "; ".join(cells))
        if report.get("calibrated"):
            lines.append(f"the judge's errors as Conductor estimated them from the labels "
                         f"(true: false positives {report['judge_false_positive']:.2f}, false "
                         f"negatives {report['judge_false_negative']:.2f}; means over seeds):")
            for name, p in report["policies"].items():
                cells = [f"{task} false positives {o['judge_fp_estimate']:.2f} (90% from its "
                         f"own labels {o['judge_fp_90_low']:.2f}-{o['judge_fp_90_high']:.2f}; "
                         f"labelled wrong answers: {o['wrong_labels']:.0f}), false negatives "
                         f"{o['judge_fn_estimate']:.2f} (labelled right: "
                         f"{o['right_labels']:.0f})"
                         for task, o in p["by_task"].items() if "judge_fp_estimate" in o]
                if cells:
                    lines.append(f"  {name[:34]:<34} " + "; ".join(cells))
    aiq = report.get("aiq", {})
    if aiq:
        lines.append("AIQ (area under the cost-quality frontier, log cost): " + ", ".join(
            f"{k} {v['aiq']:.3f}" for k, v in aiq.items() if isinstance(v, dict)))
    return "\n".join(lines)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def replay_plots(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("--plots needs matplotlib: pip install 'conductor-router[bench]'"
                          ) from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, p in report["policies"].items():
        o = p["overall"]
        c = o["cost_usd"] / max(o["requests"], 1)
        marker = "o" if name.startswith("always:") else "*"
        ax.scatter(c, o["quality"], marker=marker, s=70 if marker == "*" else 30)
        ax.annotate(name.replace("always:", "")[:28], (c, o["quality"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    for name in ("conductor", "epsilon-greedy", "ucb1"):
        pts = report.get("aiq", {}).get(name, {}).get("points")
        if pts:
            xs, ys = zip(*sorted(pts), strict=True)
            ax.plot(xs, ys, "-", alpha=0.6, label=f"{name} (bar sweep)")
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per request (USD, log)")
    ax.set_ylabel("mean quality")
    ax.set_title("Cost vs quality")
    ax.legend(fontsize=8)
    files.append(_save(plt, fig, out / "frontier.png"))
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, curve in report.get("regret_curves", {}).items():
        if name.startswith("always:") or name == "best-fixed-per-task":
            continue
        ax.plot(curve, label=name)
    ax.set_xlabel("requests")
    ax.set_ylabel("cumulative regret vs best fixed model per task")
    ax.legend(fontsize=8)
    files.append(_save(plt, fig, out / "regret.png"))
    curves = report.get("deficit_curves", {})
    if curves:
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, by_task in curves.items():
            for task, curve in by_task.items():
                ax.plot(curve, label=f"{name}: {task}")
        ax.axhline(0.0, color="grey", lw=0.8)
        settled = [v for by_task in curves.values() for c in by_task.values() for v in c[50:]]
        if settled:  # the first requests swing widely; show where the controller works
            lo, hi = min(settled), max(settled)
            pad = max(0.01, 0.2 * (hi - lo))
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("requests of the task type (seed 0)")
        ax.set_ylabel("target - realized mean quality over the window")
        ax.set_title("Quality deficit (above 0: owed to the target)")
        ax.legend(fontsize=8)
        files.append(_save(plt, fig, out / "deficit.png"))
    return files
