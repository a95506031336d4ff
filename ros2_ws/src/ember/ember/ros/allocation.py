"""Task allocation by bids, and reassignment when robots fail (pure Python, no ROS).

Open-RMF style: every eligible robot of a type that may take a step bids for it with a cost,
the lowest cost wins.

* A robot is *live* when it is online and its battery is at or above `low_battery`; it is
  *eligible* for new steps when it is live and available. A robot whose battery fell under
  `low_battery` is *recharging* until it reaches `low_battery + battery_hysteresis`, and not
  live meanwhile: a battery that hovers at the threshold (sensor noise) moves its steps once,
  not on every heartbeat.
* A robot may take a step when its type is the step's type, or when the task's fused
  selection scores its type at or above `selection_threshold` (a suitable substitute).
  A step with no type ('') accepts any suitable type (or the task's top type).
* cost = w_suitability * (1 - score[robot type]) + w_type_mismatch * [type differs]
         + w_battery * (1 - battery) + w_load * (steps the robot already holds)
  ties go to the smaller robot id, so allocation is deterministic.

Steps move only when their robot can no longer keep them (offline, battery under
`low_battery`, its type changed), with one exception below. A robot that comes back (online,
recharged, available again) does not take back the steps others took over meanwhile; it takes
pending steps it may do and bids for new ones (where its smaller load makes it the cheapest).

The exception, so that the first robot back after a type-wide outage does not keep every step
that waited for its type: a step it took from pending less than `share_window_s` ago is bid for
again when another robot becomes eligible, its holder bidding as if it did not hold it; the lowest
bid keeps it. Such a step moves this way at most once. (Steps moved off a robot that failed went to
the lowest bid among all eligible robots already, and a robot that comes back never takes those
back: a robot on a flaky link does not pull its steps to and fro.)

Nothing is lost: every step of an active task is either held by a live robot or pending as
unassignable (reported once, in `Changes.unassignable`, when it becomes so). Pending steps
are retried whenever a robot becomes eligible: those its type may take (no robot that was
eligible already could). `Changes.plans` says, per (task, robot),
the robot's complete step list after the change and whether that plan is new, updated or
cancelled; a fleet manager publishes exactly those.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ember.fleet_config import CostWeights
from ember.labels import ROBOT_TYPES

STATUS_NEW = "new"
STATUS_UPDATED = "updated"
STATUS_CANCELLED = "cancelled"


@dataclass
class RobotState:
    """What the allocator knows of one robot."""

    robot_id: str
    robot_type: str
    battery: float = 1.0
    available: bool = True
    online: bool = True
    recharging: bool = False
    """its battery fell under low_battery and has not reached low_battery + battery_hysteresis since"""


@dataclass(frozen=True)
class Step:
    """One step of a task; `robot_type` '' means any suitable type."""

    step_id: str
    task_id: str
    order: int
    description: str
    robot_type: str


@dataclass(frozen=True)
class Policy:
    """Thresholds and weights of the allocation."""

    low_battery: float = 0.2
    battery_hysteresis: float = 0.05
    """a robot that fell under low_battery is live again at low_battery + this (at most 1)"""
    selection_threshold: float = 0.5
    weights: CostWeights = field(default_factory=CostWeights)
    share_window_s: float = 30.0
    """a step taken from pending this recently is bid for again when a robot becomes eligible (0 = never)"""

    def __post_init__(self) -> None:
        for name in ("battery_hysteresis", "share_window_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    @property
    def recharged_battery(self) -> float:
        """The battery at which a recharging robot is live again."""
        return min(self.low_battery + self.battery_hysteresis, 1.0)


@dataclass(frozen=True)
class PlanChange:
    """A plan to (re)send: the robot's whole step list for the task after the change."""

    task_id: str
    robot_id: str
    status: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Unassignable:
    """A step that no live robot can take (now); it stays pending and is retried."""

    step: Step
    reason: str


@dataclass
class Changes:
    """What one allocator operation changed."""

    plans: list[PlanChange] = field(default_factory=list)
    unassignable: list[Unassignable] = field(default_factory=list)
    moved: list[tuple[str, str, str]] = field(default_factory=list)
    """(step_id, from robot, to robot) for steps that changed hands"""

    def extend(self, other: Changes) -> None:
        """Append another operation's changes."""
        self.plans.extend(other.plans)
        self.unassignable.extend(other.unassignable)
        self.moved.extend(other.moved)

    def __bool__(self) -> bool:
        return bool(self.plans or self.unassignable or self.moved)


@dataclass
class _Task:
    task_id: str
    steps: list[Step]
    scores: tuple[float, ...]


class Allocator:
    """Holds which robot has which step, allocates new tasks and repairs after failures."""

    def __init__(self, policy: Policy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or Policy()
        self._clock = clock
        """seconds, for share_window_s (the caller's clock: the manager's monotonic time, a test's ticks)"""
        self.robots: dict[str, RobotState] = {}
        self._tasks: dict[str, _Task] = {}
        self._owner: dict[str, str] = {}
        self._pending: dict[str, str] = {}
        self._steps: dict[str, Step] = {}
        self._active_plans: set[tuple[str, str]] = set()
        self._load: dict[str, int] = {}
        self._accept: dict[str, tuple[str, ...]] = {}
        """step_id -> robot types that may take it, best first (its task's scores are fixed)"""
        self._eligible: dict[str, set[str]] = {t: set() for t in ROBOT_TYPES}
        """robot type -> ids of the eligible robots of that type (the only ones that bid)"""
        self._handed: dict[str, float] = {}
        """step_id -> when its holder took it from pending (it may be shared once, within share_window_s)"""

    # -- queries ---------------------------------------------------------------------------
    def is_live(self, robot: RobotState) -> bool:
        """Online with enough battery (not recharging): may keep its steps."""
        return robot.online and not robot.recharging and robot.battery >= self.policy.low_battery

    def is_eligible(self, robot: RobotState) -> bool:
        """Live and available: may take new steps."""
        return self.is_live(robot) and robot.available

    def load(self, robot_id: str) -> int:
        """Number of steps the robot holds, across tasks."""
        return self._load.get(robot_id, 0)

    def owner(self, step_id: str) -> str | None:
        """The robot holding the step, or None if it is pending."""
        return self._owner.get(step_id)

    def pending(self) -> dict[str, str]:
        """Unassignable steps (step_id -> reason), retried when robots change."""
        return dict(self._pending)

    def tasks(self) -> list[str]:
        """Active task ids."""
        return list(self._tasks)

    def task_steps(self, task_id: str) -> list[Step]:
        """The steps of a task, in order."""
        return list(self._tasks[task_id].steps)

    def plan_of(self, task_id: str, robot_id: str) -> tuple[Step, ...]:
        """The robot's steps for the task, in execution order."""
        return tuple(s for s in self._tasks[task_id].steps if self._owner.get(s.step_id) == robot_id)

    def has_plan(self, task_id: str, robot_id: str) -> bool:
        """Whether the robot holds steps of the task (its plan for it is active)."""
        return (task_id, robot_id) in self._active_plans

    def robots_of(self, task_id: str) -> list[str]:
        """Robots holding at least one step of the task, sorted."""
        return sorted({self._owner[s.step_id] for s in self._tasks[task_id].steps if s.step_id in self._owner})

    def acceptable_types(self, step: Step, scores: Sequence[float]) -> list[str]:
        """Robot types that may take the step, best first."""
        thr = self.policy.selection_threshold
        ranked = sorted(range(len(ROBOT_TYPES)), key=lambda i: (-scores[i], i))
        suitable = [ROBOT_TYPES[i] for i in ranked if scores[i] >= thr]
        if step.robot_type:
            return [step.robot_type] + [t for t in suitable if t != step.robot_type]
        return suitable or [ROBOT_TYPES[ranked[0]]]

    def _acceptable(self, step: Step, scores: Sequence[float]) -> Sequence[str]:
        """acceptable_types, from the cache for a step of an active task."""
        cached = self._accept.get(step.step_id)
        if cached is not None and self._steps.get(step.step_id) is step:
            return cached
        return self.acceptable_types(step, scores)

    def bid(self, robot: RobotState, step: Step, scores: Sequence[float]) -> float | None:
        """The robot's cost for the step, or None if it may not take it."""
        if not self.is_eligible(robot) or robot.robot_type not in self._acceptable(step, scores):
            return None
        w = self.policy.weights
        score = scores[ROBOT_TYPES.index(robot.robot_type)]
        mismatch = 1.0 if step.robot_type and robot.robot_type != step.robot_type else 0.0
        return (
            w.suitability * (1.0 - score)
            + w.type_mismatch * mismatch
            + w.battery * (1.0 - min(max(robot.battery, 0.0), 1.0))
            + w.load * self.load(robot.robot_id)
        )

    # -- operations ------------------------------------------------------------------------
    def update_robot(
        self,
        robot_id: str,
        robot_type: str,
        battery: float = 1.0,
        available: bool = True,
        online: bool = True,
    ) -> Changes:
        """A heartbeat (or its absence): repairs plans of a robot that is no longer live and
        retries pending steps when a robot became eligible."""
        if robot_type not in ROBOT_TYPES:
            raise ValueError(f"unknown robot type {robot_type!r} for robot {robot_id!r}")
        old = self.robots.get(robot_id)
        was_live = old is not None and self.is_live(old)
        was_eligible = old is not None and self.is_eligible(old)
        battery = float(battery)
        recharging = battery < self.policy.low_battery or (old is not None and old.recharging and battery < self.policy.recharged_battery)
        robot = RobotState(robot_id, robot_type, battery, bool(available), bool(online), recharging)
        self.robots[robot_id] = robot
        if old is not None:
            self._eligible[old.robot_type].discard(robot_id)
        if self.is_eligible(robot):
            self._eligible[robot_type].add(robot_id)
        changes = Changes()
        type_changed = old is not None and old.robot_type != robot_type
        if (was_live and not self.is_live(robot)) or type_changed:
            changes.extend(self._release(robot_id))
        if self.is_eligible(robot) and (not was_eligible or type_changed):
            if self._pending:
                changes.extend(self._retry_pending(robot))
            if self._handed:
                changes.extend(self._share(robot))
        return changes

    def set_offline(self, robot_id: str) -> Changes:
        """Heartbeat timeout: the robot's steps go to other robots."""
        robot = self.robots.get(robot_id)
        if robot is None or not robot.online:
            return Changes()
        return self.update_robot(robot_id, robot.robot_type, robot.battery, robot.available, online=False)

    def forget_robot(self, robot_id: str) -> bool:
        """Drop a robot that is offline and holds no step (gone for good); False, and nothing
        changes, for a robot that is unknown, online or still holds steps."""
        robot = self.robots.get(robot_id)
        if robot is None or robot.online or self.load(robot_id):
            return False
        del self.robots[robot_id]
        self._load.pop(robot_id, None)
        self._eligible[robot.robot_type].discard(robot_id)
        return True

    def add_task(self, task_id: str, steps: Iterable[Step], scores: Sequence[float]) -> Changes:
        """Allocate a new task's steps by bids; scores are the fused robot-type scores."""
        if task_id in self._tasks:
            raise ValueError(f"task {task_id!r} already exists")
        if len(scores) != len(ROBOT_TYPES):
            raise ValueError(f"expected {len(ROBOT_TYPES)} robot-type scores, got {len(scores)}")
        steps = list(steps)
        for s in steps:
            if s.task_id != task_id:
                raise ValueError(f"step {s.step_id!r} belongs to task {s.task_id!r}, not {task_id!r}")
            if s.step_id in self._steps:
                raise ValueError(f"duplicate step id {s.step_id!r}")
            if s.robot_type and s.robot_type not in ROBOT_TYPES:
                raise ValueError(f"step {s.step_id!r} has unknown robot type {s.robot_type!r}")
        steps.sort(key=lambda s: (s.order, s.step_id))
        task = _Task(task_id, steps, tuple(float(x) for x in scores))
        self._tasks[task_id] = task
        for s in steps:
            self._steps[s.step_id] = s
            self._accept[s.step_id] = tuple(self.acceptable_types(s, task.scores))
        return self._assign(steps, {})

    def finish_task(self, task_id: str) -> Changes:
        """Close a task (done or withdrawn): its robots get cancellations."""
        task = self._tasks.pop(task_id, None)
        if task is None:
            return Changes()
        changes = Changes()
        holders = set()
        for s in task.steps:
            rid = self._owner.pop(s.step_id, None)
            self._pending.pop(s.step_id, None)
            self._handed.pop(s.step_id, None)
            self._steps.pop(s.step_id, None)
            self._accept.pop(s.step_id, None)
            if rid is not None:
                holders.add(rid)
                self._load[rid] -= 1
        for rid in sorted(holders):
            self._active_plans.discard((task_id, rid))
            changes.plans.append(PlanChange(task_id, rid, STATUS_CANCELLED, ()))
        return changes

    # -- internals -------------------------------------------------------------------------
    def _release(self, robot_id: str) -> Changes:
        """Take every step from `robot_id` and give it to others (or make it pending)."""
        held = [self._steps[sid] for sid, rid in self._owner.items() if rid == robot_id]
        if not held:
            return Changes()
        previous = {}
        for s in held:
            previous[s.step_id] = robot_id
            del self._owner[s.step_id]
            self._load[robot_id] -= 1
            self._handed.pop(s.step_id, None)  # where it goes now is a lowest bid of all: not shared
        held.sort(key=lambda s: (s.order, s.step_id))
        return self._assign(held, previous)

    def _retry_pending(self, robot: RobotState) -> Changes:
        """`robot` became eligible: the pending steps its type may take are allocated again (no
        other robot could take them, or they would not be pending)."""
        t = robot.robot_type
        steps = sorted(
            (self._steps[sid] for sid in self._pending if t in self._accept[sid]), key=lambda s: (s.order, s.step_id)
        )
        return self._assign(steps, {}, handed=True) if steps else Changes()

    def _share(self, robot: RobotState) -> Changes:
        """`robot` became eligible: steps taken from pending within share_window_s that its type
        may take are bid for again, most loaded holder and latest step first, each holder bidding
        as if it did not hold the step. A step that changes hands here is not shared again."""
        now = self._clock()
        window = self.policy.share_window_s
        self._handed = {sid: t for sid, t in self._handed.items() if now - t <= window}
        candidates = {sid for sid in self._handed
                      if robot.robot_type in self._accept[sid] and self._owner[sid] != robot.robot_id
                      and self.is_eligible(self.robots[self._owner[sid]])}
        changes = Changes()
        touched: set[tuple[str, str]] = set()
        while candidates:
            sid = max(candidates, key=lambda s: (self.load(self._owner[s]), self._steps[s].order, s))
            candidates.discard(sid)
            step, holder = self._steps[sid], self._owner[sid]
            self._load[holder] -= 1  # its bid without this step
            best = self._best_bid(step)
            rid = holder if best is None else best[1]
            self._owner[sid] = rid
            self._load[rid] = self._load.get(rid, 0) + 1
            if rid != holder:
                del self._handed[sid]
                changes.moved.append((sid, holder, rid))
                touched |= {(step.task_id, holder), (step.task_id, rid)}
        self._plan_changes(touched, changes)
        return changes

    def _best_bid(self, step: Step) -> tuple[float, str] | None:
        """(cost, robot id) of the lowest bid for the step among eligible robots, None if none may."""
        scores = self._tasks[step.task_id].scores
        best: tuple[float, str] | None = None
        for t in self._accept[step.step_id]:
            for rid in self._eligible[t]:
                cost = self.bid(self.robots[rid], step, scores)
                if cost is not None and (best is None or (cost, rid) < best):
                    best = (cost, rid)
        return best

    def _assign(self, steps: list[Step], previous: dict[str, str], handed: bool = False) -> Changes:
        """Give each step to its lowest bid (or make it pending). `handed`: steps retried from
        pending, which may be shared once with a robot that becomes eligible within share_window_s."""
        changes = Changes()
        touched: set[tuple[str, str]] = {(self._steps[sid].task_id, rid) for sid, rid in previous.items()}
        now = self._clock() if handed and self.policy.share_window_s > 0 else None
        for step in steps:
            scores = self._tasks[step.task_id].scores
            best = self._best_bid(step)
            if best is None:
                if step.step_id not in self._pending:
                    reason = self._why_unassignable(step, scores)
                    self._pending[step.step_id] = reason
                    changes.unassignable.append(Unassignable(step, reason))
                continue
            rid = best[1]
            self._pending.pop(step.step_id, None)
            self._owner[step.step_id] = rid
            self._load[rid] = self._load.get(rid, 0) + 1
            touched.add((step.task_id, rid))
            if now is not None:
                self._handed[step.step_id] = now
            if step.step_id in previous:
                changes.moved.append((step.step_id, previous[step.step_id], rid))
        self._plan_changes(touched, changes)
        return changes

    def _plan_changes(self, touched: set[tuple[str, str]], changes: Changes) -> None:
        """Append the new, updated or cancelled plan of each touched (task, robot) to `changes`."""
        for task_id, rid in sorted(touched):
            plan = self.plan_of(task_id, rid)
            key = (task_id, rid)
            if plan:
                status = STATUS_UPDATED if key in self._active_plans else STATUS_NEW
                self._active_plans.add(key)
                changes.plans.append(PlanChange(task_id, rid, status, plan))
            elif key in self._active_plans:
                self._active_plans.discard(key)
                changes.plans.append(PlanChange(task_id, rid, STATUS_CANCELLED, ()))

    def _why_unassignable(self, step: Step, scores: Sequence[float]) -> str:
        types = self.acceptable_types(step, scores)
        of_type = [r for r in self.robots.values() if r.robot_type in types]
        if not of_type:
            return f"no robot of a suitable type ({', '.join(types)}) in the fleet"
        parts = []
        low_battery = self.policy.low_battery
        offline = sorted(r.robot_id for r in of_type if not r.online)
        low = sorted(r.robot_id for r in of_type if r.online and r.battery < low_battery)
        charging = sorted(r.robot_id for r in of_type if r.online and r.recharging and r.battery >= low_battery)
        busy = sorted(r.robot_id for r in of_type if self.is_live(r) and not r.available)
        if offline:
            parts.append(f"offline: {', '.join(offline)}")
        if low:
            parts.append(f"battery under {low_battery:g}: {', '.join(low)}")
        if charging:
            parts.append(f"recharging to {self.policy.recharged_battery:g}: {', '.join(charging)}")
        if busy:
            parts.append(f"unavailable: {', '.join(busy)}")
        return f"no live robot of a suitable type ({', '.join(types)}); " + "; ".join(parts)

    def check_invariants(self) -> None:
        """Raise AssertionError if a step is lost, doubled or held by a robot that may not hold it."""
        for task in self._tasks.values():
            for s in task.steps:
                held, pend = s.step_id in self._owner, s.step_id in self._pending
                assert held != pend, f"step {s.step_id} held={held} pending={pend}"
                if held:
                    robot = self.robots[self._owner[s.step_id]]
                    assert self.is_live(robot), f"step {s.step_id} held by {robot} which is not live"
                    assert robot.robot_type in self.acceptable_types(s, task.scores), (s, robot)
        assert set(self._owner) | set(self._pending) == set(self._steps)
        counts: dict[str, int] = {}
        for rid in self._owner.values():
            counts[rid] = counts.get(rid, 0) + 1
        assert {k: v for k, v in self._load.items() if v} == counts, (self._load, counts)
        active = {(self._steps[sid].task_id, rid) for sid, rid in self._owner.items()}
        assert active == self._active_plans, (active, self._active_plans)
        eligible = {t: {r.robot_id for r in self.robots.values() if r.robot_type == t and self.is_eligible(r)}
                    for t in ROBOT_TYPES}
        assert eligible == self._eligible, (eligible, self._eligible)
        assert set(self._accept) == set(self._steps)
        assert set(self._handed) <= set(self._owner), set(self._handed) - set(self._owner)
        for sid, reason in self._pending.items():  # nobody could take it, or it would be held
            types = self._accept[sid]
            assert not any(self._eligible[t] for t in types), (sid, reason)
