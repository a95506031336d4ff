"""The one place that fixes every label order in Ember (DESIGN §3, §5).

Training, export, the engine, the ROS messages and evaluation all index robot types,
incident categories and place categories through these tuples; nothing else may define
an order of its own.
"""

from __future__ import annotations

ROBOT_TYPES: tuple[str, ...] = ("drone", "humanoid", "wheeled", "legged", "underwater")
"""Robot type ids, in the fixed order used by every score vector."""

ROBOT_DISPLAY_NAMES: tuple[str, ...] = (
    "Drone",
    "Humanoid",
    "Robot with Wheels",
    "Robot with Legs",
    "Underwater Robot",
)
"""Display names of the robot-selection dataset, index-aligned with ROBOT_TYPES."""

INCIDENT_LABELS: tuple[str, ...] = (
    'damaged',
    'flooded',
    'dirty contamined',
    'blocked',
    'collapsed',
    'snow covered',
    'under construction',
    'burned',
    'on fire',
    'with smoke',
    'ice storm',
    'drought',
    'dust sand storm',
    'thunderstorm',
    'wildfire',
    'tropical cyclone',
    'heavy rainfall',
    'tornado',
    'derecho',
    'earthquake',
    'landslide',
    'mudslide mudflow',
    'rockslide rockfall',
    'snowslide avalanche',
    'volcanic eruption',
    'sinkhole',
    'storm surge',
    'fog',
    'hailstorm',
    'dust devil',
    'fire whirl',
    'traffic jam',
    'ship boat accident',
    'airplane accident',
    'car accident',
    'train accident',
    'bus accident',
    'bicycle accident',
    'motorcycle accident',
    'van accident',
    'truck accident',
    'oil spill',
    'nuclear explosion',
)
"""The 43 Incidents1M incident categories, in the order of incidents.txt."""

PLACE_LABELS: tuple[str, ...] = (
    'badlands',
    'beach',
    'bridge',
    'building facade',
    'building outdoor',
    'cabin outdoor',
    'coast',
    'construction site',
    'dam',
    'desert road',
    'desert',
    'downtown',
    'excavation',
    'farm',
    'field',
    'fire station',
    'forest',
    'forest road',
    'gas station',
    'glacier',
    'highway',
    'house',
    'industrial area',
    'junkyard',
    'lake natural',
    'landfill',
    'lighthouse',
    'mountain',
    'nuclear power plant',
    'ocean',
    'oil rig',
    'park',
    'parking lot',
    'pier',
    'port',
    'power line',
    'railroad track',
    'religious building',
    'residential neighborhood',
    'river',
    'sky',
    'skyscraper',
    'slum',
    'snowfield',
    'sports field',
    'street',
    'valley',
    'village',
    'volcano',
)
"""The 49 Incidents1M place categories, in the order of places.txt."""

NUM_ROBOT_TYPES = len(ROBOT_TYPES)
NUM_INCIDENTS = len(INCIDENT_LABELS)
NUM_PLACES = len(PLACE_LABELS)

def normalize_label(name: str) -> str:
    """The one matching rule for label names typed by people: case, '_' and runs of spaces do not
    count ('On_Fire ' -> 'on fire'). Training's loaders and the bag ground truth both use it."""
    return " ".join(name.replace("_", " ").lower().split())


_ROBOT_ALIASES = {normalize_label(name): i for i, name in enumerate(ROBOT_DISPLAY_NAMES)}
_ROBOT_ALIASES.update({rid: i for i, rid in enumerate(ROBOT_TYPES)})
_ROBOT_ALIASES.update({"wheels": 2, "legs": 3, "robot with wheel": 2, "robot with leg": 3})
_INCIDENT_INDEX = {normalize_label(n): i for i, n in enumerate(INCIDENT_LABELS)}
_PLACE_INDEX = {normalize_label(n): i for i, n in enumerate(PLACE_LABELS)}


def robot_index(name: str) -> int:
    """Index of a robot type given its id ("legged") or display name ("Robot with Legs"), matched
    by `normalize_label`.

    Raises ValueError naming the unknown robot.
    """
    key = normalize_label(name)
    if key not in _ROBOT_ALIASES:
        raise ValueError(f"unknown robot type {name!r}; expected one of {', '.join(ROBOT_DISPLAY_NAMES)}")
    return _ROBOT_ALIASES[key]


def parse_robot_set(text: str) -> list[int]:
    """Parse a comma-separated robot set ("Drone, Robot with Legs") into sorted unique indices."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    if not parts:
        raise ValueError(f"empty robot set {text!r}")
    return sorted({robot_index(p) for p in parts})


def incident_index(name: str) -> int:
    """Index of an Incidents1M incident category, matched by `normalize_label`; ValueError if unknown."""
    try:
        return _INCIDENT_INDEX[normalize_label(name)]
    except KeyError:
        raise ValueError(f"unknown incident category {name!r}") from None


def place_index(name: str) -> int:
    """Index of an Incidents1M place category, matched by `normalize_label`; ValueError if unknown."""
    try:
        return _PLACE_INDEX[normalize_label(name)]
    except KeyError:
        raise ValueError(f"unknown place category {name!r}") from None
