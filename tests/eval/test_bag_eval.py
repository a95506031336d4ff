"""`ember-eval bag` offline: report, summary and plots from the real engine; failures never look complete."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ember.eval.bag_eval import f32
from ember.eval.metrics import incident_metrics, robot_selection_metrics
from tests.bag.helpers import cli, labelled_image_bag, string_bag, truncate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _report(out):
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_offline_report_is_complete_and_consistent_with_the_engine(tmp_path, tiny_bundle, storage):
    pixels = labelled_image_bag(tmp_path / "bag", storage, n=7, malformed=(3,))
    out = tmp_path / "report"
    res = cli("eval", "bag", "--bag", tmp_path / "bag", "--bundle", tiny_bundle, "--out", out)
    assert res.returncode == 0, res.stderr
    assert "offline: 6/7 frames answered, 0 dropped, 1 undecodable" in res.stdout
    rep = _report(out)
    assert rep["complete"] is True and rep["mode"] == "offline" and rep["model_version"] == "tiny-random-int8"
    assert rep["frames"] == {"total": 7, "answered": 6, "dropped": 0, "undecodable": 1, "with_ground_truth": 7,
                             "evaluated": 6}
    rows = rep["per_frame"]
    assert rows[3]["status"] == "undecodable" and "step" in rows[3]["error"]
    answered = [r for r in rows if r["status"] == "answered"]
    # the report's metrics are those of its per-frame rows
    inc = incident_metrics([r["gold_incidents"] for r in answered], [r["incidents"] for r in answered],
                           [r["incident_scores"] for r in answered])
    assert rep["incidents"]["mAP"] == pytest.approx(inc["mAP"], abs=1e-5)
    assert rep["incidents"]["top1"] == inc["top1"] and rep["incidents"]["top5"] == inc["top5"]
    assert rep["incidents"]["n_with_incident"] == 5  # LABELS has one frame without incident; frame 3 undecodable
    rs = robot_selection_metrics([r["gold_robots"] for r in answered], [r["robots"] for r in answered],
                                 scores=[r["robot_scores"] for r in answered])
    for key in ("exact_match", "jaccard", "micro_f1", "macro_f1", "top1_hit"):
        assert rep["robot_selection"][key] == pytest.approx(rs[key]), key
    assert sum(sum(r) for r in rep["confusion"]["counts"]) == 6
    assert rep["latency_ms"]["n"] == 6 and rep["latency_ms"]["p50"] > 0
    # the rows are the engine's answers on the bag's pixels
    from ember.engine import EmberEngine

    engine = EmberEngine(tiny_bundle)
    a = engine.analyze(pixels[0], task=rep["task"])
    assert rows[0]["incidents"] == a.incident_labels and rows[0]["robots"] == a.robot_types
    np.testing.assert_allclose(rows[0]["robot_scores"], f32(a.robot_scores), atol=1e-6)
    # summary and plots
    for name in ("confusion_matrix.png", "per_robot_f1.png", "latency_hist.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
        assert name in rep["plots"]
    summary = (out / "summary.md").read_text()
    assert "| 7 | 6 | 0 | 1 | 7 | 6 |" in summary and "![per_robot_f1.png](per_robot_f1.png)" in summary
    assert f"{rep['robot_selection']['jaccard']:.3f}" in summary


def test_failed_runs_leave_an_incomplete_report_only(tmp_path, tiny_bundle):
    labelled_image_bag(tmp_path / "bag", "mcap", n=6, size=(120, 160))
    out = tmp_path / "report"
    assert cli("eval", "bag", "--bag", tmp_path / "bag", "--bundle", tiny_bundle, "--out", out).returncode == 0
    assert (out / "per_robot_f1.png").exists()

    truncate(tmp_path / "bag", 0.5)
    res = cli("eval", "bag", "--bag", tmp_path / "bag", "--bundle", tiny_bundle, "--out", out)
    assert res.returncode == 2 and "truncated or corrupt" in res.stderr
    rep = _report(out)
    assert rep["complete"] is False and "truncated or corrupt" in rep["error"]
    assert "incidents" not in rep and "robot_selection" not in rep
    assert not list(out.glob("*.png")), "plots of an earlier run must not survive a failed one"
    assert "INCOMPLETE" in (out / "summary.md").read_text()

    string_bag(tmp_path / "chat", "sqlite3", [0.0])
    res = cli("eval", "bag", "--bag", tmp_path / "chat", "--bundle", tiny_bundle, "--out", out)
    assert res.returncode == 2 and "has no camera topic" in res.stderr and _report(out)["complete"] is False
    labelled_image_bag(tmp_path / "ok", "mcap", n=2)
    res = cli("eval", "bag", "--bag", tmp_path / "ok", "--bundle", tiny_bundle, "--out", out, "--topic", "/front/image")
    assert res.returncode == 2 and "has no topic '/front/image'" in _report(out)["error"]
    res = cli("eval", "bag", "--bag", tmp_path / "ok", "--bundle", tmp_path / "missing", "--out", out)
    assert res.returncode == 2 and _report(out)["complete"] is False
