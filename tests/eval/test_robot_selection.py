"""`ember-eval robot-selection` on the dataset's single and multi formats, with the real engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ember.eval.metrics import robot_selection_metrics
from ember.eval.robot_selection import DataError, load_rows
from ember.eval.scenes import neutral_frames
from ember.labels import ROBOT_TYPES
from tests.bag.helpers import cli

SINGLE = "robot_selection/single_robot_selection.json"
MULTI = "robot_selection/multi_robot_selection_dataset.json"


def test_shared_files_load_in_both_formats(shared_data):
    fmt_s, single = load_rows(shared_data / SINGLE)
    fmt_m, multi = load_rows(shared_data / MULTI)
    assert (fmt_s, fmt_m, len(single), len(multi)) == ("single", "multi", 198, 198)
    assert [r.gold for r in single] == [r.gold for r in multi]
    assert single[0].task == "Inspect a high-rise building\u2019s exterior for damage." and single[0].gold == (0,)
    assert sum(len(r.gold) > 1 for r in single) == 83  # multi-robot gold sets


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_data_file_saved_by_windows_tools_loads_as_ember_train_reads_it(tmp_path, shared_data, encoding):
    """Notepad/Excel write a UTF-8 BOM, PowerShell 5's `>` UTF-16: ember-train read both, ember-eval
    refused them ('Unexpected UTF-8 BOM', 'is not JSON')."""
    from ember_training.data.robot_selection import load_robot_single

    path = tmp_path / "tasks.json"
    path.write_text((shared_data / SINGLE).read_text(encoding="utf-8").replace("\n", "\r\n"), encoding=encoding)
    fmt, rows = load_rows(path)
    assert fmt == "single" and [r.task for r in rows] == [r.task for r in load_rows(shared_data / SINGLE)[1]]
    samples, report = load_robot_single(path)
    assert len(samples) + report.skipped["duplicate row"] == len(rows) == 198  # 4 rows are doubled
    (tmp_path / "latin1.json").write_bytes('[{"input": "Task: Caf\u00e9", "output": "Drone"}]'.encode("latin-1"))
    with pytest.raises(DataError, match="latin1.json is not UTF-8 text"):
        load_rows(tmp_path / "latin1.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ("[]", "holds no rows"),
        ('{"input": "Task: x"}', "must hold a JSON list of rows, not a dict"),
        ("[{]", "is not JSON"),
        ('[{"input": "Task: Fly.", "output": "Drone"}, {"input": "Task: Jet.", "output": "Drone, Jetpack"},'
         ' {"input": "Task: Swim.", "output": "Submarine"}]',
         "2 of 3 rows are bad: row 1: unknown robot type 'Jetpack'; expected one of Drone, Humanoid, Robot with Wheels, "
         "Robot with Legs, Underwater Robot; row 2: unknown robot type 'Submarine'"),
        ('[{"input": "Task: Fly."}]', "row 0: no 'output'"),
        ('[{"input": "Task:  ", "output": "Drone"}]', "row 0: no task text"),
        ('[{"input": "Task: a", "subtasks": [], "original_single_robot_output": ["Drone", "Wings"]}]',
         "(multi format): 1 of 1 rows are bad: row 0: unknown robot type 'Wings'"),
    ],
)
def test_bad_data_files_are_refused_with_the_reason(tmp_path, content, message):
    path = tmp_path / "data.json"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        load_rows(path)
    assert message in str(err.value)


def test_cli_errors_exit_2_without_writing_json(tmp_path, tiny_bundle):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    res = cli("eval", "robot-selection", "--bundle", tiny_bundle, "--data", empty, "--json", tmp_path / "out.json")
    assert res.returncode == 2 and res.stderr.strip() == f"ember-eval: error: data file {empty} is empty"
    assert not (tmp_path / "out.json").exists()
    missing_bundle = cli("eval", "robot-selection", "--bundle", tmp_path / "nobundle", "--data", empty)
    assert missing_bundle.returncode == 2


def test_cli_writes_metrics_that_match_its_own_rows(tmp_path, shared_data, tiny_bundle):
    rows = json.loads((shared_data / SINGLE).read_text())[:40]
    data = tmp_path / "subset.json"
    data.write_text(json.dumps(rows))
    out = tmp_path / "rs.json"
    res = cli("eval", "robot-selection", "--bundle", tiny_bundle, "--data", data, "--json", out)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["complete"] is True and report["format"] == "single" and report["n"] == 40
    for key in ("exact_match", "jaccard", "micro_f1", "macro_f1", "top1_hit"):
        assert 0.0 <= report[key] <= 1.0, key
        assert f"{key}={report[key]:.3f}" in res.stdout
    assert set(report["per_robot"]) == set(ROBOT_TYPES)
    for rid in ROBOT_TYPES:
        assert set(report["per_robot"][rid]) >= {"precision", "recall", "f1", "support"}
        assert rid in res.stdout
    # the metrics are those of the per-row predictions it wrote
    again = robot_selection_metrics([r["gold"] for r in report["rows"]], [r["pred"] for r in report["rows"]],
                                    scores=[r["scores"] for r in report["rows"]])
    for key in ("exact_match", "jaccard", "micro_f1", "macro_f1", "top1_hit"):
        assert report[key] == pytest.approx(again[key]), key
    # and the rows are the engine's: rerun two rows here
    from ember.engine import EmberEngine

    engine = EmberEngine(tiny_bundle)
    frames = neutral_frames()
    for i in (0, 5):
        a = engine.analyze(frames[i % len(frames)], task=report["rows"][i]["task"], max_new_tokens=0)
        np.testing.assert_allclose(report["rows"][i]["scores"], a.robot_scores, atol=1e-6)
        assert report["rows"][i]["pred"] == a.robot_types


def test_cli_reads_the_multi_format_and_pairs_given_images(tmp_path, shared_data, tiny_bundle):
    rows = json.loads((shared_data / MULTI).read_text())[:12]
    data = tmp_path / "multi.json"
    data.write_text(json.dumps(rows))
    out = tmp_path / "rs.json"
    images = shared_data / "incidents" / "images"
    res = cli("eval", "robot-selection", "--bundle", tiny_bundle, "--data", data, "--json", out, "--images", images)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["format"] == "multi" and report["n"] == 12 and report["images"] == str(images)
    assert [r["gold"] for r in report["rows"]][:1] == [["drone"]]


def test_cross_validation_options_come_from_the_training_side(tmp_path, shared_data):
    pytest.importorskip("ember_training.robot_selection.cv")
    helped = cli("eval", "robot-selection", "--help")
    assert helped.returncode == 0 and "--cv K" in helped.stdout and "--config" in helped.stdout
    res = cli("eval", "robot-selection", "--cv", "5", "--data", shared_data / SINGLE)
    assert res.returncode == 2 and "--cv needs --config" in res.stderr


def test_skip_bad_rows_evaluates_the_rest_and_reports_what_it_skipped(tmp_path, shared_data, tiny_bundle):
    """ember-train skips the rows it cannot use; --skip-bad-rows lets ember-eval do the same on that file
    (without it the file is refused, as above), naming each skipped row and counting it in the report."""
    rows = json.loads((shared_data / SINGLE).read_text())[:12]
    rows[3]["output"] = "Robotic Arm"
    rows[7] = {"input": "", "output": "Drone"}
    data = tmp_path / "mine.json"
    data.write_text(json.dumps(rows))
    out = tmp_path / "rs.json"
    refused = cli("eval", "robot-selection", "--bundle", tiny_bundle, "--data", data, "--json", out)
    assert refused.returncode == 2 and "2 of 12 rows are bad" in refused.stderr and not out.exists()

    res = cli("eval", "robot-selection", "--bundle", tiny_bundle, "--data", data, "--json", out, "--skip-bad-rows")
    assert res.returncode == 0, res.stderr
    assert "skipped 2 of 12 rows: row 3: unknown robot type 'Robotic Arm'" in res.stderr, res.stderr
    assert "row 7: no task text in 'input'" in res.stderr, res.stderr
    report = json.loads(out.read_text())
    assert report["n"] == 10 and [p.split(":")[0] for p in report["skipped_rows"]] == ["row 3", "row 7"]
    assert [r["index"] for r in report["rows"]] == [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]

    rows = [{"input": "", "output": "Drone"}]
    data.write_text(json.dumps(rows))
    none_left = cli("eval", "robot-selection", "--bundle", tiny_bundle, "--data", data, "--skip-bad-rows")
    assert none_left.returncode == 2 and "no usable rows" in none_left.stderr, none_left.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--folds", "7"], "--folds 7: --cv 5 has folds 0..4"),
    (["--folds", "0,x"], "bad --folds '0,x'"),
    (["--folds", "1,1"], "--folds 1,1 names fold 1 twice"),
    (["--cv", "1"], "k must be >= 2, got 1"),
    (["--cv", "500"], "194 distinct tasks cannot fill 500 folds"),
    (["--config", "config/train/nope.yaml"], "cannot read config config/train/nope.yaml"),
    (["--data", "no/such/robots.json"], "no robot-selection data at no/such/robots.json"),
    (["--set", "robot_selection.selector.step_head_c=abc"], "robot_selection.selector.step_head_c"),
    (["--set", "robot_selection.selctor.words=300"], "unknown key robot_selection.selctor"),
    (["--set", "robot_selection.stepz=3"], "unknown key(s) robot_selection.stepz"),
    (["--set", "model.n_positions=8"], "exceeds model.n_positions=8"),
    (["--set", "robot_selection.steps"], "bad --set 'robot_selection.steps'; expected KEY=VALUE"),
    (["--set", "robot_selection.steps=[3"], "bad --set 'robot_selection.steps=[3': the value is not YAML"),
])
def test_cross_validation_refuses_bad_arguments_before_it_trains(args, message, tmp_path, shared_data, monkeypatch, capsys):
    """A bad --folds/--cv/--config/--data/--set ends `--cv` at once with one line naming it and
    exit 2: not a traceback, and not after a fold's 12 minutes of training (a wrong-typed --set
    value used to fail only when the selector was trained, a misspelt key was silently ignored)."""
    cv = pytest.importorskip("ember_training.robot_selection.cv")
    from ember.eval.cli import main

    def trained(*a, **k):
        raise AssertionError("a fold was trained")

    monkeypatch.setattr(cv, "train_fold", trained)
    argv = {"--cv": "5", "--config": "config/train/demo.yaml", "--data": str(shared_data / SINGLE),
            "--work": str(tmp_path / "work")}
    flag, value = args
    argv[flag] = value  # replaces a default, or adds --folds / --set
    assert main(["robot-selection", *(x for kv in argv.items() for x in kv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ember-eval: error: ") and message in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "work" / "fold0").exists()
