"""Evaluating a model on a bag: offline (the engine over the bag's frames) and scoring.

Both modes reduce each answered frame to a `Prediction` of what the robot publishes (top
incident labels + scores, selected robot types + five scores, float32 as on the wire), keyed
by the image header stamp, so offline and live runs are scored by the same code and match
frame for frame; live runs only add frames the node dropped. Live runs: `ember.eval.live`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ember.bag.frames import camera_stream, iter_frames, read_ground_truth
from ember.bag.ground_truth import GroundTruth
from ember.bag.io import open_bag
from ember.eval.metrics import confusion, incident_metrics, latency_summary, robot_selection_metrics
from ember.labels import ROBOT_TYPES


def f32(values) -> list[float]:
    """Values as the float32 of a ROS message (so offline and live scores compare exactly)."""
    return [float(v) for v in np.asarray(list(values), dtype=np.float32)]


@dataclass
class Prediction:
    """What the robot said about one frame."""

    incident_labels: list[str]
    incident_scores: list[float]
    robot_types: list[str]
    robot_scores: list[float]
    latency_ms: float
    end_to_end_ms: float | None = None

    @classmethod
    def from_analysis(cls, a, latency_ms: float) -> Prediction:
        """From an `ember.engine.Analysis` (offline)."""
        return cls(list(a.incident_labels), f32(a.incident_scores), list(a.robot_types), f32(a.robot_scores), latency_ms)


@dataclass
class FrameInfo:
    """A camera frame of the bag without its pixels."""

    index: int
    stamp_ns: int
    bag_time_ns: int
    truth: GroundTruth | None
    error: str | None


@dataclass
class EvalRun:
    """Frames of the bag and the predictions of one run (offline or live)."""

    mode: str
    bag: str
    camera_topic: str
    camera_type: str
    task: str
    frames: list[FrameInfo]
    predictions: dict[int, Prediction]
    model_version: str = ""
    extra: dict = field(default_factory=dict)


def bag_task(path: str | Path, topic: str | None = None) -> str | None:
    """The task of the bag's ground truth when every frame agrees on one, else None."""
    with open_bag(path) as bag:
        camera = camera_stream(bag, topic)
        tasks = {t.task for t in read_ground_truth(bag, camera.topic).values()}
    return tasks.pop() if len(tasks) == 1 and None not in tasks else None


def run_offline(path: str | Path, engine, task: str, topic: str | None = None, max_new_tokens: int | None = None) -> EvalRun:
    """The engine over every decodable frame of the bag's camera topic, in bag order."""
    frames: list[FrameInfo] = []
    preds: dict[int, Prediction] = {}
    with open_bag(path) as bag:
        notes = list(bag.notes)
        camera = camera_stream(bag, topic)
        truth = read_ground_truth(bag, camera.topic)
        for fr in iter_frames(bag, camera, truth):
            frames.append(FrameInfo(fr.index, fr.stamp_ns, fr.bag_time_ns, fr.truth, fr.error))
            if fr.rgb is None:
                continue
            a = engine.analyze(fr.rgb, task=task, max_new_tokens=max_new_tokens)
            preds[fr.stamp_ns] = Prediction.from_analysis(a, a.timings_ms.get("total_ms", 0.0))
    if not frames:
        raise ValueError(f"camera topic {camera.topic} of {path} holds no message")
    return EvalRun("offline", str(path), camera.topic, camera.msgtype, task, frames, preds,
                   model_version=getattr(engine, "model_version", ""), extra={"bag_notes": notes} if notes else {})


def score(run: EvalRun) -> dict:
    """Frame counts, incident and robot-selection metrics, confusion matrix and latencies of a run."""
    answered = [f for f in run.frames if f.stamp_ns in run.predictions]
    undecodable = [f for f in run.frames if f.error is not None]
    dropped = [f for f in run.frames if f.error is None and f.stamp_ns not in run.predictions]
    judged = [f for f in answered if f.truth is not None]
    counts = {
        "total": len(run.frames),
        "answered": len(answered),
        "dropped": len(dropped),
        "undecodable": len(undecodable),
        "with_ground_truth": sum(f.truth is not None for f in run.frames),
        "evaluated": len(judged),
    }
    out: dict = {"frames": counts, "incidents": None, "robot_selection": None, "confusion": None}
    if judged:
        gold = [f.truth.incidents for f in judged]
        preds = [run.predictions[f.stamp_ns] for f in judged]
        out["incidents"] = incident_metrics(gold, [p.incident_labels for p in preds], [p.incident_scores for p in preds])
        rows, cols, matrix = confusion(gold, [p.incident_labels[0] for p in preds])
        out["confusion"] = {"gold": rows, "predicted": cols, "counts": matrix.tolist()}
        with_robots = [f for f in judged if f.truth.robot_types]
        if with_robots:
            rp = [run.predictions[f.stamp_ns] for f in with_robots]
            out["robot_selection"] = robot_selection_metrics(
                [f.truth.robot_types for f in with_robots],
                [[ROBOT_TYPES.index(r) for r in p.robot_types] for p in rp],
                scores=[p.robot_scores for p in rp],
            )
    pred_list = [run.predictions[f.stamp_ns] for f in answered]
    out["latency_ms"] = latency_summary([p.latency_ms for p in pred_list])
    e2e = [p.end_to_end_ms for p in pred_list if p.end_to_end_ms is not None]
    out["end_to_end_ms"] = latency_summary(e2e) if e2e else None
    return out


def per_frame(run: EvalRun) -> list[dict]:
    """One JSON row per frame: stamp, source, gold labels, prediction (or why there is none)."""
    rows = []
    for f in run.frames:
        p = run.predictions.get(f.stamp_ns)
        row = {
            "index": f.index,
            "stamp_ns": f.stamp_ns,
            "source": f.truth.source if f.truth else None,
            "gold_incidents": f.truth.incidents if f.truth else None,
            "gold_robots": f.truth.robot_types if f.truth else None,
            "status": "answered" if p else ("undecodable" if f.error else "dropped"),
        }
        if f.error:
            row["error"] = f.error
        if p:
            row.update(
                {
                    "incidents": p.incident_labels,
                    "incident_scores": [round(s, 6) for s in p.incident_scores],
                    "robots": p.robot_types,
                    "robot_scores": [round(s, 6) for s in p.robot_scores],
                    "latency_ms": round(p.latency_ms, 3),
                }
            )
            if p.end_to_end_ms is not None:
                row["end_to_end_ms"] = round(p.end_to_end_ms, 3)
        rows.append(row)
    return rows


def agreement(live: EvalRun, offline: EvalRun) -> dict:
    """How far a live run's answers differ from the offline engine on the same frames."""
    common = [s for s in live.predictions if s in offline.predictions]
    if not common:
        return {"frames_compared": 0}
    same_top = sum(live.predictions[s].incident_labels == offline.predictions[s].incident_labels for s in common)
    same_set = sum(live.predictions[s].robot_types == offline.predictions[s].robot_types for s in common)
    diff = max(
        max(np.abs(np.subtract(live.predictions[s].robot_scores, offline.predictions[s].robot_scores)).max(),
            np.abs(np.subtract(live.predictions[s].incident_scores, offline.predictions[s].incident_scores)).max()
            if len(live.predictions[s].incident_scores) == len(offline.predictions[s].incident_scores) else np.inf)
        for s in common
    )
    return {
        "frames_compared": len(common),
        "identical_incident_lists": same_top,
        "identical_robot_sets": same_set,
        "max_abs_score_diff": float(diff),
    }
