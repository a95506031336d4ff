"""`ember-eval`: evaluate a model bundle on a bag (offline or live) or on robot-selection data.

    ember-eval bag --bag BAG [--bundle build/bundle] [--live] [--out DIR]
    ember-eval robot-selection [--bundle build/bundle] --data FILE.json [--json OUT] [--images DIR] [--skip-bad-rows]
    ember-eval robot-selection --cv 5 --config config/train/small.yaml --data FILE.json [--json OUT]

Bad input (a truncated bag, an unknown message type, a missing topic, an empty data file,
rows with unknown robot names) ends with one line `ember-eval: error: ...` and status 2;
a bag evaluation that fails leaves a report marked `"complete": false`, never a partial
report marked complete.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from ember.deploy.extras import tool_missing
from ember.fsutil import json_text

DEFAULT_BUNDLE = "build/bundle"


def _errors() -> tuple[type[BaseException], ...]:
    """What a bad input raises: these end the run with a clear one-line error."""
    from ember.bag.errors import BagError
    from ember.engine.bundle import BundleError

    return (BagError, BundleError, ValueError, RuntimeError, OSError)


def _engine(bundle: str, threads: int):
    from ember.engine import EmberEngine

    return EmberEngine(bundle, threads=threads)


def _node_params(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bad --node-param {item!r}; expected KEY=VALUE")
        import yaml

        out[key.strip()] = yaml.safe_load(value)
    return out


def _bag(args: argparse.Namespace) -> int:
    from ember.eval import report as rep
    from ember.eval.bag_eval import agreement, bag_task, run_offline, score
    from ember.prompting import DEFAULT_TASK

    mode = "live" if args.live else "offline"
    out = Path(args.out or f"build/eval/{Path(args.bag).name}-{mode}")
    context = {"bag": str(args.bag), "bundle": str(args.bundle)}
    try:  # before the run: an evaluation must not end with nowhere to put its report
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"ember-eval: error: cannot use {out} as the report directory: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        task = args.task or bag_task(args.bag, args.topic) or DEFAULT_TASK
        if args.live:
            from ember.eval.live import run_live

            shutil.rmtree(out / rep.OUTPUTS_BAG, ignore_errors=True)  # an earlier run's recording

            params = {"threads": args.threads, **_node_params(args.node_param or [])}
            if args.max_new_tokens is not None:
                params.setdefault("max_new_tokens", args.max_new_tokens)
            run = run_live(
                args.bag, None if args.connect else args.bundle, task, topic=args.topic, connect=args.connect,
                replay_rate=args.rate, settle_s=args.settle, node_params=params,
                record_to=(out / rep.OUTPUTS_BAG) if args.record_outputs else None,
                discovery_timeout=args.discovery_timeout,
            )
            if args.compare_offline:
                engine = _engine(args.bundle, args.threads)
                offline = run_offline(args.bag, engine, task, args.topic, args.max_new_tokens)
                run.extra["agreement"] = agreement(run, offline)
                run.extra["offline_on_answered_frames"] = _restricted_score(offline, run)
        else:
            engine = _engine(args.bundle, args.threads)
            run = run_offline(args.bag, engine, task, args.topic, args.max_new_tokens)
        metrics = score(run)
        for note in run.extra.get("bag_notes", []):  # an unfinished recording, say: also in report.json
            print(f"ember-eval: note: {note}", file=sys.stderr)
    except _errors() as exc:
        print(f"ember-eval: error: {exc}", file=sys.stderr)
        try:
            rep.write_failure(out, mode, f"{type(exc).__name__}: {exc}", context)
        except OSError as write_exc:
            print(f"ember-eval: error: cannot write the incomplete report in {out}: {write_exc}", file=sys.stderr)
            return 2
        print(f"incomplete report: {out / 'report.json'}", file=sys.stderr)
        return 2
    try:
        report = rep.write_report(out, run, metrics, args.bundle)
    except OSError as exc:
        print(f"ember-eval: error: cannot write the report in {out}: {exc}", file=sys.stderr)
        return 2
    fr, inc, rs = report["frames"], report["incidents"] or {}, report["robot_selection"] or {}

    def f(v):
        return "-" if v is None else f"{v:.3f}"

    print(f"{mode}: {fr['answered']}/{fr['total']} frames answered, {fr['dropped']} dropped, {fr['undecodable']} undecodable")
    print(f"incidents: top1={f(inc.get('top1'))} top5={f(inc.get('top5'))} mAP={f(inc.get('mAP'))}")
    print(f"robots: exact={f(rs.get('exact_match'))} jaccard={f(rs.get('jaccard'))} micro_f1={f(rs.get('micro_f1'))} "
          f"macro_f1={f(rs.get('macro_f1'))}")
    print(f"latency p50={f(report['latency_ms']['p50'])} ms p99={f(report['latency_ms']['p99'])} ms")
    print(f"report: {out / 'report.json'}")
    return 0


def _restricted_score(offline, live) -> dict:
    """Offline metrics over just the frames the live node answered (what live should equal)."""
    from ember.eval.bag_eval import EvalRun, score

    kept = {s: p for s, p in offline.predictions.items() if s in live.predictions}
    sub = EvalRun("offline", offline.bag, offline.camera_topic, offline.camera_type, offline.task,
                  [f for f in offline.frames if f.stamp_ns in kept], kept, offline.model_version)
    m = score(sub)
    return {"incidents": m["incidents"], "robot_selection": m["robot_selection"]}


def _load_images(folder: str) -> list:
    import cv2

    from ember.bag.make import IMAGE_SUFFIXES

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image under {folder}")
    frames = []
    for p in files:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"image {p} cannot be decoded")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return frames


def _unwritable(path: Path) -> str | None:
    """Why a file cannot be written at `path` (its parent directories are created), or None."""
    import os

    if path.is_dir():
        return "it is a directory"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return str(exc.strerror or exc)
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "permission denied"
    return None


def _robot_selection(args: argparse.Namespace) -> int:
    problem = _unwritable(Path(args.json)) if args.json else None
    if problem:  # before the run, which may take minutes: its result must have somewhere to go
        print(f"ember-eval: error: cannot write --json {args.json}: {problem}", file=sys.stderr)
        return 2
    if getattr(args, "cv", None):  # issue 7: cross-validation lives on the training side (torch), loaded lazily
        from ember_training.robot_selection.cv import main_from_args

        return main_from_args(args)
    from ember.eval import robot_selection as rsel
    from ember.eval.scenes import NEUTRAL_SOURCE, neutral_frames

    try:
        skipped: list[str] | None = [] if args.skip_bad_rows else None
        fmt, rows = rsel.load_rows(args.data, skipped)
        if skipped:
            print(f"ember-eval: skipped {len(skipped)} of {len(rows) + len(skipped)} rows: {rsel.listed(skipped)}",
                  file=sys.stderr)
        frames = _load_images(args.images) if args.images else neutral_frames()
        engine = _engine(args.bundle, args.threads)
        t0 = time.perf_counter()
        metrics, pred = rsel.evaluate(engine, rows, frames, args.max_new_tokens)
        seconds = time.perf_counter() - t0
    except _errors() as exc:
        print(f"ember-eval: error: {exc}", file=sys.stderr)
        return 2
    print(rsel.format_table(metrics))
    if args.json:
        report = {
            "schema": "ember.eval.robot_selection/1",
            "complete": True,
            "data": str(args.data),
            "format": fmt,
            "bundle": str(args.bundle),
            "model_version": engine.model_version,
            "images": str(args.images) if args.images else NEUTRAL_SOURCE,
            "seconds": round(seconds, 3),
            **metrics,
            "skipped_rows": skipped or [],
            "rows": rsel.per_row(rows, pred),
        }
        try:
            Path(args.json).write_text(json_text(report))
        except OSError as exc:
            print(f"ember-eval: error: cannot write --json {args.json}: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ember-eval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    bag = sub.add_parser("bag", help="incident and robot-selection metrics on a bag with ground truth")
    bag.add_argument("--bag", required=True)
    bag.add_argument("--bundle", default=DEFAULT_BUNDLE)
    bag.add_argument("--live", action="store_true", help="replay into an incident node instead of running the engine here")
    bag.add_argument("--out", help="report directory (default build/eval/<bag>-<mode>)")
    bag.add_argument("--task", help="task for every frame (default: the bag's ground-truth task, else the default task)")
    bag.add_argument("--topic", help="camera topic (default: the bag's only camera topic)")
    bag.add_argument("--threads", type=int, default=1)
    bag.add_argument("--max-new-tokens", type=int, default=None)
    live = bag.add_argument_group("live")
    live.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    live.add_argument("--connect", metavar="NS", help="use the incident node already running in namespace NS")
    live.add_argument("--settle", type=float, default=5.0, help="seconds without an answer that end the run")
    live.add_argument("--discovery-timeout", type=float, default=30.0, metavar="S",
                      help="seconds to wait for the node's topics to match")
    live.add_argument("--node-param", action="append", metavar="KEY=VALUE", help="extra incident node parameter")
    live.add_argument("--record-outputs", action="store_true", help="also record the node's outputs into OUT/live_outputs")
    live.add_argument("--compare-offline", action="store_true", help="also run the engine here and compare frame by frame")
    bag.set_defaults(func=_bag)

    rs = sub.add_parser("robot-selection", help="robot-selection metrics on the robot-selection JSON format")
    rs.add_argument("--bundle", default=DEFAULT_BUNDLE)
    rs.add_argument("--data", required=True, help="single_robot_selection.json or multi_robot_selection_dataset.json")
    rs.add_argument("--json", help="write metrics and per-row predictions here")
    rs.add_argument("--images", help="camera frames to pair the text-only tasks with (default: built-in neutral scenes)")
    rs.add_argument("--threads", type=int, default=1)
    rs.add_argument("--max-new-tokens", type=int, default=0, help="selection comes from the heads; 0 skips generation")
    rs.add_argument("--skip-bad-rows", action="store_true",
                    help="leave out (and name) rows ember-train would skip instead of refusing the file")
    try:  # issue 7: `--cv K --config C` options, present where the training side is installed
        from ember_training.robot_selection.cv import add_cv_arguments
    except ImportError:
        add_cv_arguments = None
    if add_cv_arguments is not None:
        add_cv_arguments(rs)
    rs.set_defaults(func=_robot_selection)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ImportError as exc:  # rosbags, matplotlib: tools, not in a robot's minimal install
        if (message := tool_missing(exc)) is None:
            raise
        print(f"ember-eval: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
