"""`ember-eval bag --live`: replay into a real incident node; answers equal the offline engine's."""

from __future__ import annotations

import json

import pytest

from ember.bag.io import open_bag
from tests.bag.helpers import cli, labelled_image_bag

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]
METRICS = ("exact_match", "jaccard", "micro_f1", "macro_f1", "top1_hit")


def _check_matches_offline(rep: dict) -> None:
    """Live answers are the offline engine's on the same frames, so the metrics agree."""
    agree = rep["agreement"]
    n = rep["frames"]["answered"]
    assert agree["frames_compared"] == n > 0
    assert agree["identical_incident_lists"] == n and agree["identical_robot_sets"] == n
    assert agree["max_abs_score_diff"] < 1e-5
    offline = rep["offline_on_answered_frames"]
    assert rep["incidents"]["mAP"] == pytest.approx(offline["incidents"]["mAP"], abs=1e-6)
    assert rep["incidents"]["top1"] == offline["incidents"]["top1"]
    for key in METRICS:
        assert rep["robot_selection"][key] == pytest.approx(offline["robot_selection"][key]), key


def test_live_matches_offline_and_records_the_outputs(tmp_path, tiny_bundle):
    labelled_image_bag(tmp_path / "bag", "mcap", n=8, period_s=0.25, malformed=(5,))
    out = tmp_path / "live"
    res = cli("eval", "bag", "--bag", tmp_path / "bag", "--bundle", tiny_bundle, "--out", out, "--live",
              "--compare-offline", "--record-outputs", "--settle", "3", timeout=180)
    assert res.returncode == 0, res.stderr + res.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["complete"] is True and rep["mode"] == "live" and rep["launched_node"] is True
    assert rep["frames"] == {"total": 8, "answered": 7, "dropped": 0, "undecodable": 1, "with_ground_truth": 8,
                             "evaluated": 7}
    _check_matches_offline(rep)
    assert rep["replay"]["published"] == 8
    assert rep["dropped_breakdown"]["received_by_node"] == 8 and rep["dropped_breakdown"]["malformed_in_node"] == 1
    assert rep["end_to_end_ms"]["n"] == 7 and rep["end_to_end_ms"]["p50"] >= rep["latency_ms"]["p50"] * 0.5
    # the node's outputs were recorded, one pair per answered frame
    with open_bag(out / "live_outputs") as bag:
        counts = {c.topic: c.msgcount for c in bag.connections}
    assert counts == {"/ember_eval/ember/incident": 7, "/ember_eval/ember/robot_selection": 7}
    for name in ("confusion_matrix.png", "per_robot_f1.png", "latency_hist.png"):
        assert (out / name).exists()


def test_a_slow_node_drops_frames_and_the_report_counts_them(tmp_path, tiny_bundle):
    labelled_image_bag(tmp_path / "bag", "sqlite3", n=12, period_s=0.1)
    out = tmp_path / "slow"
    res = cli("eval", "bag", "--bag", tmp_path / "bag", "--bundle", tiny_bundle, "--out", out, "--live",
              "--compare-offline", "--node-param", "processing_delay_s=0.35", "--settle", "2", timeout=180)
    assert res.returncode == 0, res.stderr + res.stdout
    rep = json.loads((out / "report.json").read_text())
    fr = rep["frames"]
    assert fr["dropped"] >= 4 and fr["answered"] + fr["dropped"] == 12
    assert rep["dropped_breakdown"]["replaced_in_node"] >= 4
    assert f"{fr['dropped']} dropped" in res.stdout
    dropped = [r for r in rep["per_frame"] if r["status"] == "dropped"]
    assert len(dropped) == fr["dropped"] and all("robots" not in r for r in dropped)
    _check_matches_offline(rep)
    assert rep["latency_ms"]["p50"] >= 350  # the node's latency includes the simulated delay


def test_live_connects_to_a_node_that_is_already_running(tmp_path, tiny_bundle):
    from tests.ros.helpers import child_process

    labelled_image_bag(tmp_path / "bag", "mcap", n=4, period_s=0.2)
    node_args = ["-m", "ember.ros.incident_node", "--ros-args", "-r", "__ns:=/robot_x", "-p", f"bundle:={tiny_bundle}",
                 "-p", "max_rate_hz:=0.0", "-p", "diagnostics_period_s:=0.5", "-p", "robot_type:=legged"]
    with child_process(node_args, timeout=90):
        out = tmp_path / "connected"
        res = cli("eval", "bag", "--bag", tmp_path / "bag", "--bundle", tiny_bundle, "--out", out, "--live",
                  "--connect", "/robot_x", "--settle", "3", timeout=120)
        assert res.returncode == 0, res.stderr + res.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["launched_node"] is False and rep["camera_target"] == "/robot_x/camera/image_raw"
    assert rep["frames"]["answered"] == 4 and rep["dropped_breakdown"]["received_by_node"] == 4

    missing = cli("eval", "bag", "--bag", tmp_path / "bag", "--out", tmp_path / "none", "--live", "--connect", "/nobody",
                  "--discovery-timeout", "3", timeout=120)
    assert missing.returncode == 2 and "no incident node answered on /nobody" in missing.stderr
    assert json.loads((tmp_path / "none" / "report.json").read_text())["complete"] is False
