"""A deterministic shift of a mixed fleet on the pure-Python Allocator, for the allocation tests.

`Shift(seed)` plays an operations engineer's shift: ~20 robots of mixed types whose batteries
drain while they work and recover while they charge (heartbeats carry +-1% sensor noise), robots
toggling `available`, robots dropping off the network for 5-60 s (the manager's heartbeat timeout
makes them offline) and coming back, 5-30 tasks open at once, closed in random order. Every
allocator call goes through `Shift.apply`, which checks what a user relies on after each event:
`Ledger` is the fleet as robots and the alert console see it (only what `Changes` publish).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ember.labels import ROBOT_TYPES
from ember.ros.allocation import STATUS_CANCELLED, STATUS_UPDATED, Allocator, Changes, Policy, Step

TYPE_MIX = ("drone",) * 6 + ("legged",) * 4 + ("humanoid",) * 4 + ("underwater",) * 2 + ("wheeled",) * 4
"""robot types of a 20-robot fleet"""
HEARTBEAT_TIMEOUT = 3
"""ticks (seconds) without a heartbeat before the manager sets a robot offline"""
NOISE = 0.01
"""battery sensor noise of a heartbeat (+-)"""


@dataclass
class Bot:
    """One simulated robot: its true battery and what it is doing."""

    robot_id: str
    robot_type: str
    battery: float
    available: bool = True
    charging: bool = False
    down_until: int = -1
    """network down until this tick (no heartbeats)"""
    last_beat: int = 0
    dipped: bool = False
    """it stopped being live on a low battery and its true battery has not really recovered since"""


class Ledger:
    """The published picture: plan per (task, robot), steps reported unassignable."""

    def __init__(self) -> None:
        self.plans: dict[tuple[str, str], tuple[str, ...]] = {}
        self.reported: set[str] = set()

    def apply(self, ch: Changes) -> None:
        for p in ch.plans:
            key = (p.task_id, p.robot_id)
            if p.status == STATUS_CANCELLED:
                assert key in self.plans, f"cancellation of a plan never sent: {key}"
                del self.plans[key]
            else:
                assert (p.status == STATUS_UPDATED) == (key in self.plans), (p.status, key)
                assert p.steps, f"a {p.status} plan without steps: {key}"
                self.plans[key] = tuple(s.step_id for s in p.steps)
                self.reported.difference_update(self.plans[key])
        for u in ch.unassignable:
            assert u.step.step_id not in self.reported, f"{u.step.step_id} reported twice without being assigned"
            self.reported.add(u.step.step_id)

    def holders(self) -> dict[str, str]:
        """step_id -> robot, as the published plans say."""
        out = {sid: rid for (_, rid), sids in self.plans.items() for sid in sids}
        assert len(out) == sum(len(v) for v in self.plans.values()), "a step in two robots' plans"
        return out


class Shift:
    """A seeded shift; `run(ticks)` plays it, checking the invariants after every event."""

    def __init__(self, seed: int, policy: Policy | None = None, types: tuple[str, ...] = TYPE_MIX,
                 open_tasks: tuple[int, int] = (5, 30)) -> None:
        self.rng = random.Random(seed)
        self.alloc = Allocator(policy or Policy(), clock=lambda: float(self.tick))
        self.ledger = Ledger()
        self.bots = {f"r{i:02d}": Bot(f"r{i:02d}", t, self.rng.uniform(0.3, 1.0)) for i, t in enumerate(types)}
        self.open_min, self.open_max = open_tasks
        self.tick = 0
        self.n_tasks = 0
        self.events = 0
        self.moves = 0
        self.alerts = 0
        self.plan_msgs = 0
        self.max_spread = 0
        self.shared = 0
        self.from_pending: dict[str, int] = {}
        """step_id -> tick its holder took it from pending (it may move once more within share_window_s)"""
        for bot in self.bots.values():
            self.heartbeat(bot)

    # -- events ----------------------------------------------------------------------------
    def heartbeat(self, bot: Bot) -> None:
        battery = min(max(bot.battery + self.rng.uniform(-NOISE, NOISE), 0.0), 1.0)
        robot = self.alloc.robots.get(bot.robot_id)
        before = None if robot is None else (self.alloc.is_live(robot), self.alloc.is_eligible(robot))
        bot.last_beat = self.tick
        ch = self.apply(lambda: self.alloc.update_robot(bot.robot_id, bot.robot_type, battery, bot.available))
        robot = self.alloc.robots[bot.robot_id]
        if before == (self.alloc.is_live(robot), self.alloc.is_eligible(robot)):
            assert not ch, f"a heartbeat that changed nothing about {bot.robot_id} changed plans: {ch}"
        low = self.alloc.policy.low_battery
        if bot.battery >= low + 2 * NOISE:
            bot.dipped = False
        if before is not None and before[0] and not self.alloc.is_live(robot):
            assert not bot.dipped, f"{bot.robot_id} stopped being live twice on battery noise around {low:g}"
            bot.dipped = True

    def add_task(self) -> None:
        self.n_tasks += 1
        tid = f"t{self.n_tasks:04d}"
        scores = [self.rng.random() for _ in ROBOT_TYPES]
        ranked = sorted(ROBOT_TYPES, key=lambda t: -scores[ROBOT_TYPES.index(t)])
        types = ranked[: self.rng.randint(1, 3)]
        steps = [Step(f"{tid}/{k}", tid, self.rng.randint(1, 3), "step", t) for k, t in enumerate(types, start=1)]
        if self.rng.random() < 0.2:
            steps.append(Step(f"{tid}/{len(steps) + 1}", tid, 4, "anyone", ""))
        self.apply(lambda: self.alloc.add_task(tid, steps, scores))

    def finish_task(self, tid: str) -> None:
        before = {rid: self.alloc.load(rid) for rid in self.bots}
        held = {}
        for s in self.alloc.task_steps(tid):
            rid = self.alloc.owner(s.step_id)
            if rid is not None:
                held[rid] = held.get(rid, 0) + 1
        self.ledger.reported.difference_update(s.step_id for s in self.alloc.task_steps(tid))
        self.apply(lambda: self.alloc.finish_task(tid))
        for rid, load in before.items():
            assert self.alloc.load(rid) == load - held.get(rid, 0), (rid, load, held)
        assert not any(t == tid for t, _ in self.ledger.plans), f"{tid} still has plans"

    def apply(self, op) -> Changes:
        """Run one allocator operation, publish its changes to the ledger and check the invariants."""
        owners = {sid: self.alloc.owner(sid) for t in self.alloc.tasks() for sid in self._ids(t)}
        live_before = {rid: self.alloc.is_live(r) for rid, r in self.alloc.robots.items()}
        eligible_before = {rid for rid, r in self.alloc.robots.items() if self.alloc.is_eligible(r)}
        ch = op()
        self.events += 1
        self.moves += len(ch.moved)
        self.alerts += len(ch.unassignable)
        self.plan_msgs += len(ch.plans)
        self.ledger.apply(ch)
        self.check(owners, live_before, eligible_before)
        return ch

    def _ids(self, task_id: str) -> list[str]:
        return [s.step_id for s in self.alloc.task_steps(task_id)]

    # -- invariants ------------------------------------------------------------------------
    def check(self, owners_before: dict[str, str | None], live_before: dict[str, bool], eligible_before: set[str]) -> None:
        a = self.alloc
        a.check_invariants()
        held = self.ledger.holders()
        all_steps = {sid for t in a.tasks() for sid in self._ids(t)}
        # every step of an open task: held by a live robot (its published plan says so) or reported
        assert set(held) | self.ledger.reported == all_steps, "a step silently lost"
        assert not set(held) & self.ledger.reported
        assert set(a.pending()) == self.ledger.reported
        for (tid, rid), sids in self.ledger.plans.items():
            assert sids == tuple(s.step_id for s in a.plan_of(tid, rid)), f"published plan of {rid} for {tid} differs"
            robot = a.robots[rid]
            assert robot.online and a.is_live(robot), f"{rid} holds {sids} while not live"
        # a step changes hands only when its holder cannot keep it, or (once) when it was taken from
        # pending within share_window_s and a robot has just become eligible
        newly_eligible = {rid for rid, r in a.robots.items() if a.is_eligible(r)} - eligible_before
        shared: set[str] = set()
        for sid, before in owners_before.items():
            now = a.owner(sid)
            if before is None or sid not in all_steps or now == before:
                continue
            taken = self.from_pending.pop(sid, None)
            if live_before.get(before) and a.is_live(a.robots[before]):
                assert taken is not None and self.tick - taken <= a.policy.share_window_s and newly_eligible, (
                    f"{sid} moved from {before} to {now} although {before} stayed live"
                )
                self.shared += 1
                shared.add(sid)
        for sid, before in owners_before.items():
            if before is None and a.owner(sid) is not None and sid in self.ledger.reported | set(held):
                self.from_pending[sid] = self.tick
        self.from_pending = {sid: t for sid, t in self.from_pending.items() if sid in all_steps}
        # each step a robot gained went to the lowest bid (docs/FLEET.md's cost), so load spreads
        # (a shared step was bid for against its holder's load at that moment: tests/fleet/test_allocation.py)
        gained: dict[str, Step] = {}
        for t in a.tasks():
            for s in a.task_steps(t):
                rid = a.owner(s.step_id)
                if rid is not None and owners_before.get(s.step_id) != rid and s.step_id not in shared:
                    last = gained.get(rid)
                    gained[rid] = s if last is None or (s.order, s.step_id) > (last.order, last.step_id) else last
        w_load = a.policy.weights.load
        for rid, s in gained.items():  # its last step of the event: bid then = bid now - one step of load
            scores = a._tasks[s.task_id].scores
            won = a.bid(a.robots[rid], s, scores) - w_load
            for other in a.robots.values():
                cost = a.bid(other, s, scores) if other.robot_id != rid else None
                assert cost is None or won <= cost + 1e-9, f"{s.step_id} went to {rid} ({won:.3f}) not {other} ({cost:.3f})"
        # suitable types only
        for t in a.tasks():
            for s in a.task_steps(t):
                rid = a.owner(s.step_id)
                if rid is not None:
                    assert a.robots[rid].robot_type in a.acceptable_types(s, a._tasks[t].scores)
        self.max_spread = max(self.max_spread, self.spread())

    def spread(self) -> int:
        """The largest load difference between two eligible robots of one type."""
        by_type: dict[str, list[int]] = {}
        for rid, r in self.alloc.robots.items():
            if self.alloc.is_eligible(r):
                by_type.setdefault(r.robot_type, []).append(self.alloc.load(rid))
        return max((max(v) - min(v) for v in by_type.values()), default=0)

    # -- the shift -------------------------------------------------------------------------
    def run(self, ticks: int) -> None:
        """Play `ticks` seconds of the shift."""
        rng = self.rng
        order = list(self.bots)
        for _ in range(ticks):
            self.tick += 1
            rng.shuffle(order)
            for rid in order:
                bot = self.bots[rid]
                working = self.alloc.load(rid) > 0
                if bot.charging:
                    bot.battery = min(1.0, bot.battery + rng.uniform(0.005, 0.02))
                    bot.charging = bot.battery < 0.95
                else:
                    bot.battery = max(0.0, bot.battery - rng.uniform(0.0005, 0.004) * (3 if working else 1))
                    bot.charging = bot.battery < 0.12
                if rng.random() < 0.003:
                    bot.available = not bot.available
                if bot.down_until < self.tick and rng.random() < 0.002:
                    bot.down_until = self.tick + rng.randint(5, 60)
                if bot.down_until < self.tick:
                    self.heartbeat(bot)
                elif self.tick - bot.last_beat > HEARTBEAT_TIMEOUT:
                    robot = self.alloc.robots[rid]
                    if robot.online:
                        self.apply(lambda rid=rid: self.alloc.set_offline(rid))
            open_now = len(self.alloc.tasks())
            if open_now < self.open_min or (open_now < self.open_max and rng.random() < 0.15):
                self.add_task()
            if open_now > self.open_min and rng.random() < 0.12:
                self.finish_task(rng.choice(self.alloc.tasks()))
