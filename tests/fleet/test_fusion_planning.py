"""Report fusion (ember.ros.fusion) and plan steps (ember.ros.planning), without ROS."""

from __future__ import annotations

from ember.prompting import format_target
from ember.ros.fusion import IncidentFuser, Report, required_types
from ember.ros.planning import build_steps

FIRE = [0.9, 0.7, 0.1, 0.2, 0.0]
FIRE2 = [0.7, 0.1, 0.1, 0.8, 0.0]


def add(fuser, robot, t, label, scores=None, conf=0.8, place="street", description="", selection_first=False):
    if scores is not None and selection_first:
        fuser.add_selection(robot, t, scores, [], conf)
    inc = fuser.add_analysis(Report(robot, t, label, conf, place, description))
    if scores is not None and not selection_first:
        fuser.add_selection(robot, t, scores, [], conf)
    return inc


def test_same_label_within_the_window_is_one_incident_and_scores_are_weighted():
    f = IncidentFuser(window_s=10)
    a = add(f, "drone_1", 100.0, "on fire", FIRE, conf=0.9)
    b = add(f, "dog_1", 105.0, "on fire", FIRE2, conf=0.3, selection_first=True)  # selection arrives first
    c = add(f, "dog_2", 130.0, "on fire", FIRE)  # outside the window: a new incident
    d = add(f, "hum_1", 104.0, "flooded", FIRE)  # other label
    assert a is b and a is not c and a is not d
    assert a.reporters == ["dog_1", "drone_1"]
    fused = a.fused_scores()
    assert abs(fused[0] - (0.9 * 0.9 + 0.3 * 0.7) / 1.2) < 1e-9
    assert abs(fused[3] - (0.9 * 0.2 + 0.3 * 0.8) / 1.2) < 1e-9


def test_pick_prefers_the_named_label_then_the_most_reported():
    f = IncidentFuser(window_s=10)
    add(f, "r1", 100.0, "on fire", FIRE)
    add(f, "r2", 101.0, "on fire", FIRE)
    add(f, "r3", 102.0, "flooded", FIRE2)
    assert f.pick("help!").label == "on fire"
    assert f.pick("The street is FLOODED, rescue people").label == "flooded"
    assert IncidentFuser().pick("anything") is None


def test_an_analysis_without_selection_gives_no_scores():
    f = IncidentFuser()
    inc = add(f, "r1", 1.0, "on fire")
    assert inc.fused_scores() is None


def test_required_types_threshold_cap_and_fallback():
    assert required_types(FIRE, 0.5, 3) == ["drone", "humanoid"]
    assert required_types(FIRE, 0.5, 1) == ["drone"]
    assert required_types([0.1, 0.2, 0.3, 0.0, 0.0], 0.5, 3) == ["wheeled"]


def test_steps_come_from_the_model_plan_and_templates_fill_the_gaps():
    text = format_target("Smoke and flames.", [0, 1], [(1, "Map the fire from above", 0), (2, "Open the gate", 2)])
    f = IncidentFuser()
    inc = add(f, "r1", 1.0, "on fire", FIRE, description=text, place="forest")
    steps, source = build_steps("task-1", inc, ["drone", "humanoid"])
    assert source == "model+template"
    assert [(s.order, s.robot_type) for s in steps] == [(1, "drone"), (2, "humanoid")]
    assert steps[0].description == "Map the fire from above"  # the model's step (wheeled step not required)
    assert "forest" in steps[1].description and steps[1].step_id == "task-1/2"
    steps, source = build_steps("task-2", add(f, "r2", 50.0, "flooded", FIRE), ["underwater"])
    assert source == "template" and steps[0].robot_type == "underwater"


def test_a_task_without_an_incident_gets_its_own_text_per_required_type():
    task = "  Inspect the submerged pilings\tof the pier for corrosion. "
    steps, source = build_steps("task-3", None, ["underwater", "drone"], task)
    assert source == "task"
    assert [(s.step_id, s.order, s.robot_type) for s in steps] == [("task-3/1", 2, "underwater"), ("task-3/2", 1, "drone")]
    assert steps[0].description == "Inspect the submerged pilings of the pier for corrosion (under water)"
    assert steps[1].description.endswith("(from the air)")
    long_steps, _ = build_steps("task-4", None, ["drone"], "x" * 5000)
    assert len(long_steps[0].description) < 600


def test_a_long_running_incident_keeps_memory_bounded():
    """Robots that keep reporting the same fire for hours make one incident; the fuser must not
    keep an entry per report ever received (a leak of ~100 entries/s with 50 robots at 2 Hz)."""
    import tracemalloc

    f = IncidentFuser(window_s=10)
    robots = [f"r{i}" for i in range(5)]

    def run(start: int, n: int) -> None:
        for k in range(start, start + n):
            for r in robots:
                add(f, r, 1000.0 + k * 0.5, "on fire", FIRE)

    tracemalloc.start()
    try:
        run(0, 2000)  # warm up: whatever bounded state the fuser keeps is full now
        base = tracemalloc.get_traced_memory()[0]
        run(2000, 4000)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(f.incidents) == 1
    assert f.incident_of("r0", 1000.0 + 5999 * 0.5) is next(iter(f.incidents.values()))
    assert grown < 200_000, f"{grown} bytes retained after 20000 more reports of one incident"


def test_a_forgotten_robot_stops_counting_in_its_incidents():
    """A robot gone for good (the manager's forget_after_s) kept its latest report in every
    incident it reported: with new robot names joining one incident for days, the incident grew
    and departed robots kept weighing in its fused scores."""
    f = IncidentFuser(window_s=10)
    fire = add(f, "drone_1", 100.0, "on fire", FIRE, conf=0.9)
    add(f, "gone_1", 101.0, "on fire", FIRE2, conf=0.9)
    alone = add(f, "gone_1", 102.0, "flooded", FIRE2)
    f.add_selection("gone_1", 103.0, FIRE2, [], 0.5)  # a selection still waiting for its analysis

    f.forget_robot("gone_1")

    assert fire.reporters == ["drone_1"]
    assert fire.fused_scores() == FIRE
    assert list(f.incidents.values()) == [fire]  # the incident only it reported is closed
    assert alone.incident_id not in f.incidents
    assert f.incident_of("gone_1", 101.0) is None
    # it joins anew later: its selection of before does not attach to its new analysis
    back = add(f, "gone_1", 103.0, "on fire")
    assert back is fire and back.reports["gone_1"].selection_scores is None
    assert f.incident_of("drone_1", 100.0) is fire
