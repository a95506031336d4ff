"""Allocation by bids and reassignment (ember.ros.allocation): examples and a seeded property test."""

from __future__ import annotations

import random

import pytest

from ember.fleet_config import CostWeights
from ember.labels import ROBOT_TYPES
from ember.ros.allocation import (
    STATUS_CANCELLED,
    STATUS_NEW,
    Allocator,
    Changes,
    Policy,
    Step,
)
from tests.fleet.shift import Ledger

FIRE = [0.9, 0.6, 0.2, 0.1, 0.0]  # drone and humanoid suitable


def steps(task: str, *types: str) -> list[Step]:
    return [Step(f"{task}/{i}", task, i, f"do {t}", t) for i, t in enumerate(types, start=1)]


def test_lowest_cost_bid_wins_and_load_spreads_steps():
    alloc = Allocator(Policy())
    alloc.update_robot("d1", "drone", battery=0.4)
    alloc.update_robot("d2", "drone", battery=0.9)
    alloc.update_robot("h1", "humanoid")
    ch = alloc.add_task("t1", steps("t1", "drone", "drone", "humanoid"), FIRE)
    # d2 has the better battery so wins step 1; with one step held its cost rises past d1's.
    assert alloc.owner("t1/1") == "d2"
    assert alloc.owner("t1/2") == "d1"
    assert alloc.owner("t1/3") == "h1"
    assert {(p.robot_id, p.status) for p in ch.plans} == {("d1", STATUS_NEW), ("d2", STATUS_NEW), ("h1", STATUS_NEW)}
    assert not ch.unassignable
    alloc.check_invariants()


def test_offline_robot_steps_move_with_update_and_cancellation():
    alloc = Allocator(Policy())
    for rid, t in [("d1", "drone"), ("d2", "drone"), ("h1", "humanoid")]:
        alloc.update_robot(rid, t)
    alloc.add_task("t1", steps("t1", "drone", "humanoid"), FIRE)
    alloc.add_task("t2", steps("t2", "drone"), FIRE)
    first = alloc.owner("t1/1")
    other = "d2" if first == "d1" else "d1"
    ch = alloc.set_offline(first)
    by_robot = {(p.task_id, p.robot_id): p for p in ch.plans}
    assert by_robot[("t1", first)].status == STATUS_CANCELLED
    assert alloc.owner("t1/1") == other
    assert [s.step_id for s in by_robot[("t1", other)].steps] == ["t1/1"]
    assert ("t1/1", first, other) in ch.moved
    alloc.check_invariants()


def test_only_an_offline_robot_without_steps_can_be_forgotten():
    alloc = Allocator(Policy())
    alloc.update_robot("d1", "drone")
    alloc.update_robot("d2", "drone")
    alloc.add_task("t1", steps("t1", "drone"), FIRE)
    holder = alloc.owner("t1/1")
    assert not alloc.forget_robot(holder)  # online, holds a step
    assert not alloc.forget_robot("nobody")
    alloc.set_offline(holder)  # its step moves to the other drone
    assert alloc.forget_robot(holder)
    assert holder not in alloc.robots and alloc.load(holder) == 0
    alloc.check_invariants()
    other = alloc.owner("t1/1")
    alloc.finish_task("t1")
    alloc.set_offline(other)
    assert alloc.forget_robot(other) and not alloc.robots
    alloc.update_robot(other, "drone")  # it comes back: a robot like any new one
    alloc.add_task("t2", steps("t2", "drone"), FIRE)
    assert alloc.owner("t2/1") == other
    alloc.check_invariants()


def test_low_battery_moves_steps_to_a_suitable_other_type_and_back_to_pending():
    alloc = Allocator(Policy(low_battery=0.2, selection_threshold=0.5))
    alloc.update_robot("d1", "drone")
    alloc.update_robot("h1", "humanoid")
    alloc.add_task("t1", steps("t1", "drone"), FIRE)
    assert alloc.owner("t1/1") == "d1"
    ch = alloc.update_robot("d1", "drone", battery=0.1)
    # humanoid scores 0.6 >= 0.5: a suitable substitute
    assert alloc.owner("t1/1") == "h1"
    assert {(p.robot_id, p.status) for p in ch.plans} == {("d1", STATUS_CANCELLED), ("h1", STATUS_NEW)}
    ch = alloc.set_offline("h1")
    assert alloc.owner("t1/1") is None
    assert len(ch.unassignable) == 1 and "battery under 0.2: d1" in ch.unassignable[0].reason
    assert "offline: h1" in ch.unassignable[0].reason
    # reported once, not again on every heartbeat
    assert not alloc.update_robot("d1", "drone", battery=0.15).unassignable
    ch = alloc.update_robot("d1", "drone", battery=0.8)
    assert alloc.owner("t1/1") == "d1" and not alloc.pending()
    assert [(p.robot_id, p.status) for p in ch.plans] == [("d1", STATUS_NEW)]
    alloc.check_invariants()


def test_unsuitable_types_never_bid():
    alloc = Allocator(Policy())
    alloc.update_robot("u1", "underwater")
    ch = alloc.add_task("t1", steps("t1", "drone"), FIRE)
    assert alloc.owner("t1/1") is None
    assert "drone, humanoid" in ch.unassignable[0].reason
    assert alloc.bid(alloc.robots["u1"], Step("x", "t1", 1, "", ""), FIRE) is None


def test_untyped_steps_go_to_the_best_suited_type():
    alloc = Allocator(Policy())
    alloc.update_robot("h1", "humanoid")
    alloc.update_robot("d1", "drone")
    alloc.add_task("t1", [Step("t1/1", "t1", 1, "look around", "")], FIRE)
    assert alloc.owner("t1/1") == "d1"


def test_finish_task_cancels_its_plans():
    alloc = Allocator(Policy())
    alloc.update_robot("d1", "drone")
    alloc.add_task("t1", steps("t1", "drone"), FIRE)
    ch = alloc.finish_task("t1")
    assert [(p.robot_id, p.status) for p in ch.plans] == [("d1", STATUS_CANCELLED)]
    assert alloc.load("d1") == 0
    alloc.check_invariants()


def test_bad_input_is_refused():
    alloc = Allocator(Policy())
    with pytest.raises(ValueError, match="unknown robot type"):
        alloc.update_robot("x", "boat")
    with pytest.raises(ValueError, match="5 robot-type scores"):
        alloc.add_task("t", [], [0.5])
    alloc.add_task("t", [], FIRE)
    with pytest.raises(ValueError, match="already exists"):
        alloc.add_task("t", [], FIRE)


@pytest.mark.parametrize("seed", range(40))
def test_property_nothing_is_lost_under_random_failures(seed):
    """Random fleets, tasks, battery drops, outages and recoveries: every step is always held by
    exactly one live, suitable robot (as its published plan says) or reported unassignable."""
    rng = random.Random(seed)
    weights = CostWeights(*(rng.uniform(0, 2) for _ in range(4)))
    alloc = Allocator(Policy(low_battery=rng.uniform(0.05, 0.4), selection_threshold=rng.uniform(0.2, 0.8), weights=weights))
    obs = Ledger()  # the fleet as robots and the alert console see it: only what Changes publish
    all_steps: set[str] = set()
    robot_ids = [f"r{i}" for i in range(rng.randint(1, 12))]
    types = {rid: rng.choice(ROBOT_TYPES) for rid in robot_ids}
    n_tasks = 0
    for _ in range(60):
        op = rng.random()
        rid = rng.choice(robot_ids)
        if op < 0.35:
            ch = alloc.update_robot(rid, types[rid], battery=rng.random(), available=rng.random() > 0.2, online=rng.random() > 0.15)
        elif op < 0.5:
            ch = alloc.set_offline(rid)
        elif op < 0.8:
            n_tasks += 1
            tid = f"t{n_tasks}"
            task_steps = [
                Step(f"{tid}/{k}", tid, rng.randint(1, 4), "step", rng.choice(("",) + ROBOT_TYPES))
                for k in range(rng.randint(1, 6))
            ]
            all_steps.update(s.step_id for s in task_steps)
            ch = alloc.add_task(tid, task_steps, [rng.random() for _ in ROBOT_TYPES])
        elif op < 0.9 and alloc.tasks():
            tid = rng.choice(alloc.tasks())
            withdrawn = {s.step_id for s in alloc.task_steps(tid)}
            all_steps.difference_update(withdrawn)
            obs.reported.difference_update(withdrawn)  # a withdrawn task's pending steps go with it
            ch = alloc.finish_task(tid)
        else:
            new = f"r{len(robot_ids)}"
            robot_ids.append(new)
            types[new] = rng.choice(ROBOT_TYPES)
            ch = alloc.update_robot(new, types[new], battery=rng.random())
        obs.apply(ch)
        alloc.check_invariants()
        # the observer's picture equals the allocator's, and accounts for every step
        held = obs.holders()
        assert set(held) | obs.reported == all_steps
        assert not set(held) & obs.reported
        for sid, rid in held.items():
            assert alloc.owner(sid) == rid
            assert alloc.is_live(alloc.robots[rid])
        assert set(alloc.pending()) == obs.reported


def test_battery_noise_around_low_battery_does_not_flip_steps():
    """A drone whose battery hovers at low_battery (+-1% sensor noise) lost its step, got it back
    on the next heartbeat, lost it again: a new plan, a cancellation and an alert every heartbeat.
    Once under low_battery it is live again only at low_battery + battery_hysteresis."""
    alloc = Allocator(Policy(low_battery=0.2, battery_hysteresis=0.05))
    alloc.update_robot("d1", "drone", battery=0.3)
    alloc.add_task("t1", steps("t1", "drone"), FIRE)
    assert alloc.owner("t1/1") == "d1"
    churn = Changes()
    for k in range(40):
        churn.extend(alloc.update_robot("d1", "drone", battery=0.2 + (0.01 if k % 2 else -0.01)))
        alloc.check_invariants()
    assert [(p.robot_id, p.status) for p in churn.plans] == [("d1", STATUS_CANCELLED)]
    assert len(churn.unassignable) == 1 and "battery" in churn.unassignable[0].reason
    assert not alloc.update_robot("d1", "drone", battery=0.24)  # charging, not there yet
    ch = alloc.add_task("t2", steps("t2", "drone"), FIRE)
    assert "recharging to 0.25: d1" in ch.unassignable[0].reason
    ch = alloc.update_robot("d1", "drone", battery=0.25)
    assert [(p.task_id, p.robot_id, p.status) for p in ch.plans] == [("t1", "d1", STATUS_NEW), ("t2", "d1", STATUS_NEW)]
    assert not alloc.update_robot("d1", "drone", battery=0.23)  # above low_battery: it keeps its step
    alloc.check_invariants()


def test_a_robot_that_comes_back_keeps_its_hands_off_the_steps_others_took_over():
    """The documented rule: steps move only when their robot cannot keep them; a robot back online
    (or recharged, or available again) takes pending and new steps, not those others took over."""
    alloc = Allocator(Policy())
    for rid in ("d1", "d2"):
        alloc.update_robot(rid, "drone")
    alloc.add_task("t1", steps("t1", "drone", "drone"), FIRE)
    assert {alloc.owner("t1/1"), alloc.owner("t1/2")} == {"d1", "d2"}
    alloc.set_offline("d1")
    assert alloc.robots_of("t1") == ["d2"]
    assert not alloc.update_robot("d1", "drone")  # back: nothing moves
    alloc.add_task("t2", steps("t2", "drone"), FIRE)
    assert alloc.owner("t2/1") == "d1"  # the idle one bids lowest for new work
    alloc.set_offline("d2")
    alloc.set_offline("d1")
    assert set(alloc.pending()) == {"t1/1", "t1/2", "t2/1"}
    ch = alloc.update_robot("d2", "drone")  # pending steps go to the first robot that can take them
    assert alloc.robots_of("t1") == alloc.robots_of("t2") == ["d2"] and not alloc.pending()
    assert not ch.moved
    alloc.check_invariants()


class _Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _outage(window: float = 30.0) -> tuple[Allocator, _Clock]:
    """Three drones holding two steps each all drop off; d1 comes back first and takes all six."""
    clock = _Clock()
    alloc = Allocator(Policy(share_window_s=window), clock=clock)
    for rid in ("d1", "d2", "d3"):
        alloc.update_robot(rid, "drone")
    for k in range(3):
        alloc.add_task(f"t{k}", steps(f"t{k}", "drone", "drone"), FIRE)
    assert sorted(alloc.load(r) for r in ("d1", "d2", "d3")) == [2, 2, 2]
    for rid in ("d1", "d2", "d3"):
        alloc.set_offline(rid)
    assert len(alloc.pending()) == 6
    clock.now = 100.0
    alloc.update_robot("d1", "drone")
    assert alloc.load("d1") == 6 and not alloc.pending()
    return alloc, clock


def test_after_a_type_wide_outage_the_robots_back_soon_after_the_first_share_its_steps():
    """Three drones drop off (a storm, a dead access point) and their six steps wait; the first one
    back took all six and kept them, the others came back seconds later to nothing: one drone with
    a queue of six, two idle. Steps taken from pending are bid for again, once, when another robot
    becomes eligible within share_window_s."""
    alloc, clock = _outage()
    clock.now = 105.0
    ch = alloc.update_robot("d2", "drone")
    assert (alloc.load("d1"), alloc.load("d2")) == (3, 3)
    assert len(ch.moved) == 3 and all(frm == "d1" and to == "d2" for _, frm, to in ch.moved)
    published = {(p.task_id, p.robot_id): p for p in ch.plans}
    for task_id, robot_id in published:  # each changed plan is whole: what the robot holds now
        assert published[task_id, robot_id].steps == alloc.plan_of(task_id, robot_id)
    assert {p.robot_id for p in ch.plans} == {"d1", "d2"}
    clock.now = 110.0
    alloc.update_robot("d3", "drone")
    assert sorted(alloc.load(r) for r in ("d1", "d2", "d3")) == [1, 2, 3]  # d2's steps moved once already
    alloc.check_invariants()
    moved_twice = alloc.update_robot("d3", "drone", available=False)
    assert not moved_twice.moved  # unavailable keeps what it holds
    alloc.update_robot("d3", "drone")
    alloc.check_invariants()


def test_steps_taken_from_pending_long_ago_and_steps_of_new_tasks_stay_put():
    alloc, clock = _outage()
    clock.now = 131.0  # past share_window_s: the robot may have started them
    assert not alloc.update_robot("d2", "drone")
    alloc, clock = _outage(window=0.0)  # sharing off
    clock.now = 101.0
    assert not alloc.update_robot("d2", "drone")
    assert alloc.load("d1") == 6
    fresh = Allocator(Policy(), clock=_Clock())  # a new task's steps went to the lowest bid of all: no sharing
    fresh.update_robot("d1", "drone")
    fresh.add_task("t1", steps("t1", "drone", "drone"), FIRE)
    assert not fresh.update_robot("d2", "drone")
    with pytest.raises(ValueError, match="share_window_s must be a finite number >= 0, got -1"):
        Policy(share_window_s=-1)


class _CountingAllocator(Allocator):
    """Counts the bids asked for (how much work an event costs, without timing it)."""

    bids = 0

    def bid(self, robot, step, scores):
        self.bids += 1
        return super().bid(robot, step, scores)


def test_bids_are_asked_only_of_robots_that_can_take_the_step():
    """With 500 robots and steps pending, every robot that came back online or became available
    again made every pending step ask all 500 robots for a bid (2.7 ms per event, x41 from 20 robots,
    bench/allocation.py); a new task asked every robot, whatever its type. Now a returning robot
    retries only the pending steps its type may take, and only robots of an acceptable type bid."""
    alloc = _CountingAllocator(Policy())
    for i in range(500):
        alloc.update_robot(f"r{i:03d}", ROBOT_TYPES[i % 5], online=ROBOT_TYPES[i % 5] != "underwater")
    dive = [0.9 if t == "underwater" else 0.1 for t in ROBOT_TYPES]
    for k in range(10):
        alloc.add_task(f"u{k}", steps(f"u{k}", "underwater"), dive)  # no underwater robot online
    assert len(alloc.pending()) == 10
    alloc.bids = 0
    alloc.set_offline("r000")  # a drone, holding nothing
    alloc.update_robot("r000", "drone")
    alloc.update_robot("r001", "humanoid", available=False)
    alloc.update_robot("r001", "humanoid")
    assert alloc.bids == 0
    alloc.add_task("t1", steps("t1", "drone"), [0.9, 0.1, 0.1, 0.1, 0.1])
    assert alloc.bids == 100  # the drones
    alloc.bids = 0
    alloc.update_robot("r004", "underwater")
    assert alloc.bids <= 10 and not alloc.pending()
    alloc.check_invariants()


def test_a_recharged_robot_is_live_again_even_when_the_hysteresis_would_pass_a_full_battery():
    alloc = Allocator(Policy(low_battery=0.98, battery_hysteresis=0.05))
    alloc.update_robot("d1", "drone", battery=0.97)
    alloc.add_task("t1", steps("t1", "drone"), FIRE)
    assert alloc.owner("t1/1") is None
    alloc.update_robot("d1", "drone", battery=1.0)  # live again at min(0.98 + 0.05, 1)
    assert alloc.owner("t1/1") == "d1"
    with pytest.raises(ValueError, match="battery_hysteresis must be a finite number >= 0, got -0.1"):
        Policy(battery_hysteresis=-0.1)
