"""Fusing several robots' reports about the same incident (pure Python, no ROS).

Reports about one incident are those with the same top label whose source-image stamps lie
within `window_s` of the incident's reports so far. Which incidents are recent is judged by when
their reports arrived (the caller's clock), not by the robots' stamps: one robot whose clock
runs ahead must not make every other incident look old. An IncidentAnalysis and a
RobotSelection from one robot are joined by (robot_id, source-image stamp): a robot
publishes both with the header of the image they came from. The fused robot-type scores
are the confidence-weighted mean of the reporters' latest selections.

Robots' clocks need not agree (a Raspberry Pi has no real-time clock; until NTP syncs, or on a
fleet without internet, it may be minutes or years off): `ClockOffset` estimates a robot's offset
from its heartbeats, and reports are matched on their stamps mapped to the caller's clock
(`Report.time`); the join of analysis and selection keeps the robot's raw stamp.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ember.labels import NUM_ROBOT_TYPES, ROBOT_TYPES

MAX_INCIDENTS = 200
MAX_UNJOINED = 2000
MAX_KEYS = 4000
"""(robot, source stamp) -> incident entries kept, newest first: enough to join a selection with
its analysis and to answer incident_of for recent reports, bounded over a long run"""
OFFSET_WINDOW = 6
"""heartbeats a robot's clock offset is estimated over: a clock stepped by NTP is followed within
this many heartbeats (within OFFSET_RANK when it steps forward)"""
OFFSET_RANK = 2
"""the offset is the OFFSET_RANK-th lowest (arrival time - stamp) of the window: network delay only
adds, and the second lowest also ignores one heartbeat stamped across a clock step"""


class ClockOffset:
    """One robot's clock offset: how far its clock is behind the caller's (s; negative: ahead),
    from its heartbeats' stamps and the caller's clock when each arrived."""

    def __init__(self, window: int = OFFSET_WINDOW) -> None:
        self._samples: deque[float] = deque(maxlen=window)

    def add(self, robot_stamp: float, local_now: float) -> bool:
        """Add a heartbeat stamped `robot_stamp` (the robot's clock) that arrived at `local_now` (the
        caller's clock); False (ignored) when either is zero: no clock to compare (an unset stamp, a
        simulated clock before its first /clock)."""
        if not robot_stamp or not local_now:
            return False
        self._samples.append(local_now - robot_stamp)
        return True

    @property
    def value(self) -> float | None:
        """The estimated offset (add it to the robot's stamps); None before a usable heartbeat."""
        if not self._samples:
            return None
        return sorted(self._samples)[min(OFFSET_RANK, len(self._samples)) - 1]

    @property
    def settled(self) -> bool:
        """The estimate rests on a full window of heartbeats (one delayed heartbeat cannot move it)."""
        return len(self._samples) == self._samples.maxlen

    def to_manager(self, stamp: float) -> float:
        """A robot stamp on the caller's clock (unchanged without an estimate)."""
        return stamp + (self.value or 0.0)


def skew_change(offset: float, alerted: float | None, limit: float) -> str:
    """What a robot's clock offset calls for, given the offset its last alert gave (None: none):
    "alert" when it is further off than `limit` and no alert gave it yet or it moved by a lot since
    (more than `limit` and than a tenth of the alerted offset: a clock that keeps drifting, such as
    a paused simulation against a manager on wall time, is not alerted on every heartbeat), "clear"
    when an alerted clock is back within half the limit, else ""."""
    if abs(offset) > limit:
        if alerted is None or abs(offset - alerted) > max(limit, 0.1 * abs(alerted)):
            return "alert"
    elif alerted is not None and abs(offset) < limit / 2:
        return "clear"
    return ""



@dataclass
class Report:
    """One robot's analysis of one image, with its robot selection once that arrived."""

    robot_id: str
    stamp: float
    incident_type: str
    confidence: float
    place: str = ""
    description: str = ""
    model_version: str = ""
    selection_scores: tuple[float, ...] | None = None
    selection_types: tuple[str, ...] = ()
    selection_confidence: float = 0.0
    reasoning: str = ""
    task: str = ""
    offset: float = 0.0
    """the reporter's clock offset when the report arrived (ClockOffset.value): `stamp` + this is
    the stamp on the caller's clock"""

    @property
    def time(self) -> float:
        """The source-image stamp on the caller's clock (what reports are matched on)."""
        return self.stamp + self.offset


@dataclass
class Incident:
    """A cluster of reports: one incident seen by one or more robots."""

    incident_id: str
    label: str
    first_seen: float
    last_seen: float
    """the earliest and latest source-image stamps of its reports, on the caller's clock (Report.time)"""
    reports: dict[str, Report] = field(default_factory=dict)
    """latest report per robot"""
    last_received: float = 0.0
    """when its latest report arrived (the caller's clock; the stamp when none is given)"""

    @property
    def reporters(self) -> list[str]:
        """Robot ids that reported this incident, sorted."""
        return sorted(self.reports)

    @property
    def confidence(self) -> float:
        """Mean confidence of the reports."""
        return sum(r.confidence for r in self.reports.values()) / max(len(self.reports), 1)

    @property
    def place(self) -> str:
        """The place most reporters saw (ties: the most confident report's)."""
        counts: dict[str, tuple[int, float]] = {}
        for r in self.reports.values():
            if r.place:
                n, c = counts.get(r.place, (0, 0.0))
                counts[r.place] = (n + 1, max(c, r.confidence))
        return max(counts, key=lambda p: (counts[p], p)) if counts else ""

    def fused_scores(self) -> list[float] | None:
        """Confidence-weighted mean of the reporters' robot-type scores; None if no selection yet."""
        with_sel = [r for r in self.reports.values() if r.selection_scores is not None]
        if not with_sel:
            return None
        weights = [max(r.selection_confidence, r.confidence, 1e-3) for r in with_sel]
        total = sum(weights)
        return [
            sum(w * r.selection_scores[i] for w, r in zip(weights, with_sel, strict=True)) / total
            for i in range(NUM_ROBOT_TYPES)
        ]

    def best_report(self) -> Report | None:
        """The most confident report."""
        return max(self.reports.values(), key=lambda r: (r.confidence, r.time), default=None)


def required_types(scores: list[float], threshold: float, max_types: int) -> list[str]:
    """Robot types whose fused score passes `threshold`, best first, at most `max_types`;
    the best type alone if none passes."""
    ranked = sorted(range(NUM_ROBOT_TYPES), key=lambda i: (-scores[i], i))
    chosen = [ROBOT_TYPES[i] for i in ranked if scores[i] >= threshold][:max_types]
    return chosen or [ROBOT_TYPES[ranked[0]]]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "incident"


class IncidentFuser:
    """Groups reports into incidents and answers which incident a task is about."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = float(window_s)
        self.incidents: OrderedDict[str, Incident] = OrderedDict()
        self._by_key: OrderedDict[tuple[str, int], Incident] = OrderedDict()
        self._unjoined: OrderedDict[tuple[str, int], Report] = OrderedDict()
        self._count = 0
        self.latest_received = 0.0

    @staticmethod
    def _key(robot_id: str, stamp: float) -> tuple[str, int]:
        return robot_id, round(stamp * 1e6)

    def add_analysis(self, report: Report, received: float | None = None) -> Incident:
        """Add a robot's IncidentAnalysis that arrived at `received` (the caller's clock, e.g.
        time.monotonic(); default: its stamp); returns the incident it joined or opened. It is
        matched on `report.time` and joined with its selection by its raw `report.stamp`."""
        received = report.time if received is None else float(received)
        key = self._key(report.robot_id, report.stamp)
        sel = self._unjoined.pop(key, None)
        if sel is not None:
            report.selection_scores = sel.selection_scores
            report.selection_types = sel.selection_types
            report.selection_confidence = sel.selection_confidence
            report.reasoning = sel.reasoning
            report.task = sel.task
        self.latest_received = max(self.latest_received, received)
        incident = self._match(report)
        if incident is None:
            self._count += 1
            iid = f"inc-{self._count:04d}-{_slug(report.incident_type)}"
            incident = Incident(iid, report.incident_type, report.time, report.time)
            self.incidents[iid] = incident
            while len(self.incidents) > MAX_INCIDENTS:
                _, old = self.incidents.popitem(last=False)
                self._by_key = OrderedDict((k, v) for k, v in self._by_key.items() if v is not old)
        prev = incident.reports.get(report.robot_id)
        if prev is None or prev.time <= report.time or prev.selection_scores is None:
            incident.reports[report.robot_id] = report
        incident.first_seen = min(incident.first_seen, report.time)
        incident.last_seen = max(incident.last_seen, report.time)
        incident.last_received = max(incident.last_received, received)
        self._by_key[key] = incident
        self._by_key.move_to_end(key)
        while len(self._by_key) > MAX_KEYS:
            self._by_key.popitem(last=False)
        return incident

    def add_selection(
        self,
        robot_id: str,
        stamp: float,
        scores: list[float],
        robot_types: list[str],
        confidence: float,
        reasoning: str = "",
        task: str = "",
    ) -> Incident | None:
        """Add a robot's RobotSelection; joins its analysis (now or when that arrives)."""
        if len(scores) != NUM_ROBOT_TYPES:
            raise ValueError(f"expected {NUM_ROBOT_TYPES} robot-type scores, got {len(scores)}")
        key = self._key(robot_id, stamp)
        incident = self._by_key.get(key)
        if incident is None:
            self._unjoined[key] = Report(
                robot_id, stamp, "", 0.0, selection_scores=tuple(float(s) for s in scores),
                selection_types=tuple(robot_types), selection_confidence=float(confidence),
                reasoning=reasoning, task=task,
            )
            while len(self._unjoined) > MAX_UNJOINED:
                self._unjoined.popitem(last=False)
            return None
        report = incident.reports.get(robot_id)
        if report is not None and self._key(robot_id, report.stamp) == key:
            report.selection_scores = tuple(float(s) for s in scores)
            report.selection_types = tuple(robot_types)
            report.selection_confidence = float(confidence)
            report.reasoning = reasoning
            report.task = task
        return incident

    def forget_robot(self, robot_id: str) -> None:
        """Drop every report of a robot gone for good: it no longer counts in any incident's
        fused scores, and an incident only it reported is closed."""
        for iid, incident in list(self.incidents.items()):
            if incident.reports.pop(robot_id, None) is not None and not incident.reports:
                del self.incidents[iid]
        for store in (self._by_key, self._unjoined):
            for key in [k for k in store if k[0] == robot_id]:
                del store[key]

    def incident_of(self, robot_id: str, stamp: float) -> Incident | None:
        """The incident that a robot's report of the image stamped `stamp` joined."""
        return self._by_key.get(self._key(robot_id, stamp))

    def _match(self, report: Report) -> Incident | None:
        best = None
        for inc in self.incidents.values():
            if inc.label != report.incident_type:
                continue
            if inc.first_seen - self.window_s <= report.time <= inc.last_seen + self.window_s:
                if best is None or inc.last_seen > best.last_seen:
                    best = inc
        return best

    def recent(self) -> list[Incident]:
        """Incidents with a report that arrived within the window before the latest one, newest first."""
        horizon = self.latest_received - self.window_s
        return sorted(
            (i for i in self.incidents.values() if i.last_received >= horizon), key=lambda i: -i.last_received
        )

    def pick(self, task: str) -> Incident | None:
        """The incident a task is about: a recent one whose label the task names, else the
        recent one most robots reported (ties: the latest); None without reports."""
        recent = [i for i in self.recent() if i.fused_scores() is not None] or self.recent()
        if not recent:
            return None
        words = " ".join(re.findall(r"[a-z]+", task.lower()))
        named = [i for i in recent if re.search(rf"\b{re.escape(i.label.lower())}\b", words)]
        pool = named or recent
        return max(pool, key=lambda i: (len(i.reports), i.last_received))
