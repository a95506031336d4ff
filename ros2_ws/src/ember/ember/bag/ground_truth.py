"""Ground truth in bags, and the labels files `ember-bag make` reads.

**On the wire / in the bag:** topic `/ember/ground_truth`, type `std_msgs/msg/String`,
`data` a JSON object (schema `ember.ground_truth/1`), written at the same bag timestamp as
the image it labels, and carrying that image's header stamp:

    {"schema": "ember.ground_truth/1", "stamp": {"sec": 1704067200, "nanosec": 0},
     "frame_id": "camera", "image_topic": "/camera/image_raw", "source": "fire.jpg",
     "incidents": ["on fire", "with smoke"], "negatives": ["flooded"],
     "places": ["house"], "robot_types": ["drone", "humanoid"], "task": "..."}

`incidents` are the positive Incidents1M labels, `negatives` the explicit negatives,
`robot_types` robot type ids (ember.labels order) or null when the frame has no robot
label, `task` the operator task or null. std_msgs/String keeps the bag readable on any
ROS 2 install (no custom interface needed) and the JSON carries the stamp a String lacks.

**Labels file:** a JSON object keyed by image path relative to the images directory, in
the Incidents1M annotation format, optionally extended with `robots` and `task`:

    {"on fire/abc.jpg": {"incidents": {"on fire": 1, "flooded": 0}, "places": {"house": 1},
                         "robots": "Drone, Humanoid", "task": "Put out the fire."}}

`incidents`/`places` may also be lists of positive names; `robots` a list or a
comma-separated string of ids or display names. Names match as ember-train matches them
(`ember.labels.normalize_label`: any case, '_' or spaces between words); the bag carries the
canonical names ("On_Fire" is written as "on fire").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ember.bag.errors import BagError
from ember.labels import INCIDENT_LABELS, PLACE_LABELS, ROBOT_TYPES, incident_index, place_index, robot_index

GROUND_TRUTH_TOPIC = "/ember/ground_truth"
GROUND_TRUTH_TYPE = "std_msgs/msg/String"
SCHEMA = "ember.ground_truth/1"


@dataclass
class GroundTruth:
    """What one frame shows and which robots it calls for."""

    stamp_ns: int
    source: str = ""
    frame_id: str = "camera"
    image_topic: str = ""
    incidents: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    robot_types: list[str] | None = None
    task: str | None = None

    def to_json(self) -> str:
        """The `data` of the std_msgs/String message."""
        body = asdict(self)
        stamp = body.pop("stamp_ns")
        return json.dumps(
            {"schema": SCHEMA, "stamp": {"sec": stamp // 10**9, "nanosec": stamp % 10**9}, **body},
            ensure_ascii=False,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        """Parse a ground-truth message; BagError for anything but schema ember.ground_truth/1."""
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise BagError(f"ground truth message is not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("schema") != SCHEMA:
            raise BagError(f"ground truth message lacks schema {SCHEMA!r}: {text[:120]!r}")
        try:
            stamp = int(body["stamp"]["sec"]) * 10**9 + int(body["stamp"]["nanosec"])
            robots = body.get("robot_types")
            return cls(
                stamp_ns=stamp,
                source=str(body.get("source", "")),
                frame_id=str(body.get("frame_id", "")),
                image_topic=str(body.get("image_topic", "")),
                incidents=[str(x) for x in body.get("incidents", [])],
                negatives=[str(x) for x in body.get("negatives", [])],
                places=[str(x) for x in body.get("places", [])],
                robot_types=None if robots is None else [ROBOT_TYPES[robot_index(r)] for r in robots],
                task=body.get("task"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BagError(f"malformed ground truth message ({exc}): {text[:120]!r}") from None


@dataclass
class LabelledImage:
    """One row of a labels file, resolved to an existing image file."""

    path: Path
    key: str
    incidents: list[str]
    negatives: list[str]
    places: list[str]
    robot_types: list[str] | None
    task: str | None


def _names(value: object, what: str, key: str) -> tuple[list[str], list[str]]:
    """(positives, negatives) from a {name: 1|0} dict or a list of positive names."""
    if value is None:
        return [], []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value), []
    if isinstance(value, dict):
        pos, neg = [], []
        for name, flag in value.items():
            if flag not in (0, 1) or isinstance(flag, bool):
                raise BagError(f"labels row {key!r}: {what} {name!r} has value {flag!r}; expected 1 or 0")
            (pos if flag == 1 else neg).append(name)
        return pos, neg
    raise BagError(f"labels row {key!r}: {what} must be a list of names or a {{name: 1|0}} object, not {value!r}")


def _robots(value: object, key: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p for p in (s.strip() for s in value.split(",")) if p]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = value
    else:
        raise BagError(f"labels row {key!r}: robots must be a list or a comma-separated string, not {value!r}")
    try:
        idx = sorted({robot_index(p) for p in parts})
    except ValueError as exc:
        raise BagError(f"labels row {key!r}: {exc}") from None
    if not idx:
        raise BagError(f"labels row {key!r}: robots is empty")
    return [ROBOT_TYPES[i] for i in idx]


def canonical_labels(names: list[str], what: str) -> list[str]:
    """The ember.labels names of incident or place (`what`) label names as people type them
    (`ember.labels.normalize_label`); ValueError naming the first unknown one."""
    lookup, known = (incident_index, INCIDENT_LABELS) if what == "incident" else (place_index, PLACE_LABELS)
    out = []
    for name in names:
        try:
            out.append(known[lookup(name)])
        except ValueError:
            raise ValueError(f"unknown {what} label {name!r}") from None
    return out


def _check(names: list[str], what: str, key: str) -> list[str]:
    try:
        return canonical_labels(names, what)
    except ValueError as exc:
        raise BagError(f"labels row {key!r}: {exc}") from None


def read_labels(images: Path, labels: Path) -> tuple[list[LabelledImage], list[str]]:
    """Rows of `labels` whose image exists under `images`, sorted by key; and the keys skipped
    because their image is missing. Unknown labels or malformed rows raise BagError."""
    try:
        data = json.loads(Path(labels).read_text())
    except FileNotFoundError:
        raise BagError(f"labels file {labels} does not exist") from None
    except ValueError as exc:
        raise BagError(f"labels file {labels} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BagError(f"labels file {labels} must be a JSON object keyed by image path")
    rows, missing = [], []
    for key in sorted(data):
        row = data[key]
        if not isinstance(row, dict):
            raise BagError(f"labels row {key!r} in {labels} is not an object")
        path = Path(images) / key
        if not path.is_file():
            missing.append(key)
            continue
        inc, neg = _names(row.get("incidents"), "incident", key)
        places, _ = _names(row.get("places"), "place", key)
        task = row.get("task")
        if task is not None and not isinstance(task, str):
            raise BagError(f"labels row {key!r}: task must be a string")
        rows.append(
            LabelledImage(
                path=path,
                key=key,
                incidents=_check(inc, "incident", key),
                negatives=_check(neg, "incident", key),
                places=_check(places, "place", key),
                robot_types=_robots(row.get("robots"), key),
                task=task,
            )
        )
    return rows, missing
