"""Writing evaluation reports: report.json, summary.md and the PNG plots, or a failure report.

A report is labelled `"complete": true` only when every step succeeded; a run that fails
part-way replaces whatever an earlier run left in the directory with a report that says
`"complete": false` and why, and no metrics or plots.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ember.eval import plots
from ember.eval.bag_eval import EvalRun, per_frame
from ember.fsutil import json_text

REPORT_SCHEMA = "ember.eval.bag/1"
PLOTS = ("confusion_matrix.png", "per_robot_f1.png", "latency_hist.png")
FILES = ("report.json", "summary.md", *PLOTS)
OUTPUTS_BAG = "live_outputs"
"""The bag of a live run's recorded node outputs (--record-outputs), inside the report directory."""


def _clear(out: Path) -> None:
    for name in FILES:
        (out / name).unlink(missing_ok=True)


def write_failure(out: Path, mode: str, error: str, context: dict | None = None) -> Path:
    """An incomplete report (no metrics) explaining why the run failed."""
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    shutil.rmtree(out / OUTPUTS_BAG, ignore_errors=True)
    report = {"schema": REPORT_SCHEMA, "complete": False, "mode": mode, "error": error,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(context or {})}
    (out / "report.json").write_text(json_text(report))
    (out / "summary.md").write_text(f"# Ember bag evaluation ({mode}): INCOMPLETE\n\nThe run failed: {error}\n")
    return out / "report.json"


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _markdown(report: dict) -> str:
    fr = report["frames"]
    lines = [
        f"# Ember bag evaluation ({report['mode']})",
        "",
        f"* bag: `{report['bag']}` (camera `{report['camera_topic']}`, {report['camera_type']})",
        f"* model: `{report['model_version']}` from `{report['bundle']}`",
        f"* task: {report['task']}",
        "",
        "| frames | answered | dropped | undecodable | with ground truth | evaluated |",
        "|---|---|---|---|---|---|",
        f"| {fr['total']} | {fr['answered']} | {fr['dropped']} | {fr['undecodable']} | {fr['with_ground_truth']} | {fr['evaluated']} |",
        "",
    ]
    inc = report["incidents"]
    if inc:
        lines += ["## Incidents", "", "| top-1 | top-5 | mAP | classes | frames with an incident |", "|---|---|---|---|---|",
                  f"| {_fmt(inc['top1'])} | {_fmt(inc['top5'])} | {_fmt(inc['mAP'])} | {inc['mAP_classes']} | {inc['n_with_incident']} |", ""]
    rs = report["robot_selection"]
    if rs:
        lines += ["## Robot selection", "",
                  "| n | exact set | Jaccard | top-1 hit | micro F1 | macro F1 |", "|---|---|---|---|---|---|",
                  f"| {rs['n']} | {_fmt(rs['exact_match'])} | {_fmt(rs['jaccard'])} | {_fmt(rs['top1_hit'])} | "
                  f"{_fmt(rs['micro_f1'])} | {_fmt(rs['macro_f1'])} |", "",
                  "| robot | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | {_fmt(v['f1'])} | {v['support']} |"
                  for k, v in rs["per_robot"].items()]
        lines.append("")
    lines += ["## Latency (ms)", "", "| series | n | p50 | p90 | p99 | max |", "|---|---|---|---|---|---|"]
    for name in ("latency_ms", "end_to_end_ms"):
        s = report.get(name)
        if s:
            lines.append(f"| {name} | {s['n']} | {_fmt(s['p50'])} | {_fmt(s['p90'])} | {_fmt(s['p99'])} | {_fmt(s['max'])} |")
    lines.append("")
    if report.get("agreement"):
        a = report["agreement"]
        lines += ["## Live vs offline on the same frames", "", "```", json.dumps(a, indent=1), "```", ""]
    lines += [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def write_report(out: Path, run: EvalRun, metrics: dict, bundle: str, extra: dict | None = None) -> dict:
    """report.json, summary.md and the plots of a finished run; returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    report = {
        "schema": REPORT_SCHEMA,
        "complete": True,
        "mode": run.mode,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bag": run.bag,
        "camera_topic": run.camera_topic,
        "camera_type": run.camera_type,
        "bundle": str(bundle),
        "model_version": run.model_version,
        "task": run.task,
        **metrics,
        **run.extra,
        **(extra or {}),
        "plots": [],
        "per_frame": per_frame(run),
    }
    title = f"{run.mode} - {Path(run.bag).name}"
    if metrics.get("confusion"):
        c = metrics["confusion"]
        plots.confusion_png(out / PLOTS[0], c["gold"], c["predicted"], c["counts"], f"incident top-1, {title}")
        report["plots"].append(PLOTS[0])
    if metrics.get("robot_selection"):
        plots.per_robot_png(out / PLOTS[1], metrics["robot_selection"]["per_robot"], f"robot selection, {title}")
        report["plots"].append(PLOTS[1])
    answered = [r for r in report["per_frame"] if r["status"] == "answered"]
    series = {"model latency": [r["latency_ms"] for r in answered],
              "end to end": [r["end_to_end_ms"] for r in answered if "end_to_end_ms" in r]}
    if answered:
        plots.latency_png(out / PLOTS[2], series, f"latency, {title}")
        report["plots"].append(PLOTS[2])
    (out / "summary.md").write_text(_markdown(report))
    # report.json last: its presence with complete=true means everything else is written
    tmp = out / "report.json.tmp"
    tmp.write_text(json_text(report))
    tmp.replace(out / "report.json")
    return report
