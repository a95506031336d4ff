"""Incidents1M loader (the real annotation format).

    {"<class>/<hash>.jpg": {"incidents": {"on fire": 1, "flooded": 0}, "places": {"forest": 1},
                            "url": "http://..."}, ...}

1 is a positive, 0 an explicit negative (kept: the multi-label loss uses it), a category that
is not mentioned is unknown and masked. Category names must be the 43 incident / 49 place
names of ember.labels; a row naming another category is skipped as "unknown label".
"""

from __future__ import annotations

from pathlib import Path

from ember.labels import NUM_INCIDENTS, NUM_PLACES, incident_index, place_index
from ember.prompting import DEFAULT_TASK

from .common import (
    MALFORMED,
    UNKNOWN_LABEL,
    DataError,
    LoadReport,
    Sample,
    label_vector,
    read_json,
)
from .images import check_image

NO_LABELS = "no labels"


def _labels(mapping: object, size: int, index) -> tuple[object, str | None]:
    """Label vector from {name: 0|1}, or (None, skip reason)."""
    vec = label_vector(size)
    if mapping is None:
        return vec, None
    if not isinstance(mapping, dict):
        return None, MALFORMED
    for name, value in mapping.items():
        if isinstance(value, bool) or value not in (0, 1):
            return None, MALFORMED
        try:
            vec[index(name)] = int(value)
        except (ValueError, AttributeError):
            return None, UNKNOWN_LABEL
    return vec, None


def load_incidents(annotations: Path, images: Path, limit: int | None = None) -> tuple[list[Sample], LoadReport]:
    """Samples with incident and place label vectors (1 / 0 / -1 unknown) and the engine's task."""
    report = LoadReport("incidents")
    data = read_json(annotations, "incidents")
    if not isinstance(data, dict):
        raise DataError(f"incidents: {annotations} is not a mapping of image path -> annotation")
    samples: list[Sample] = []
    for key, row in data.items():
        if limit is not None and len(samples) >= limit:
            break
        report.rows += 1
        if not isinstance(row, dict):
            report.skip(MALFORMED)
            continue
        incidents, why = _labels(row.get("incidents"), NUM_INCIDENTS, incident_index)
        places, why_p = (None, None) if why else _labels(row.get("places"), NUM_PLACES, place_index)
        if why or why_p:
            report.skip(why or why_p)
            continue
        if (incidents < 0).all() and (places < 0).all():
            report.skip(NO_LABELS)
            continue
        path = images / key
        if problem := check_image(path):
            report.skip(problem)
            continue
        samples.append(
            Sample(uid=f"incidents/{key}", source="incidents", image=str(path), task=DEFAULT_TASK,
                   incidents=incidents, places=places)
        )
    report.kept = len(samples)
    return samples, report.emit()
