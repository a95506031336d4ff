"""Incidents1M loader (the real annotation format).

    {"<class>/<hash>.jpg": {"incidents": {"on fire": 1, "flooded": 0}, "places": {"forest": 1},
                            "url": "http://..."}, ...}

1 is a positive, 0 an explicit negative (kept: the multi-label loss uses it), a category that
is not mentioned is unknown and masked. Category names are the 43 incident / 49 place names of
ember.labels, matched by `ember.labels.normalize_label` (any case, '_' or spaces between words:
"On_Fire" is "on fire"; the bag ground truth uses the same rule); a row naming another category
is skipped as "unknown label".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

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
from .images import ImageLookup

NO_LABELS = "no labels"


def _labels(mapping: object, size: int, index: Callable[[str], int]) -> tuple[np.ndarray | None, str | None, object]:
    """(label vector, None, None) from {name: 0|1}, or (None, skip reason, the offending name/value)."""
    vec = label_vector(size)
    if mapping is None:
        return vec, None, None
    if not isinstance(mapping, dict):
        return None, MALFORMED, mapping
    for name, value in mapping.items():
        if isinstance(value, bool) or value not in (0, 1):
            return None, MALFORMED, f"{name}: {value!r}"
        try:
            vec[index(name)] = int(value)
        except ValueError:  # not one of the categories
            return None, UNKNOWN_LABEL, name
    return vec, None, None


def load_incidents(annotations: Path, images: Path, limit: int | None = None) -> tuple[list[Sample], LoadReport]:
    """Samples with incident and place label vectors (1 / 0 / -1 unknown) and the engine's task."""
    report = LoadReport("incidents")
    data = read_json(annotations, "incidents", keyed_rows=True)
    if not isinstance(data, dict):
        raise DataError(f"incidents: {annotations} is not a mapping of image path -> annotation")
    samples: list[Sample] = []
    with ImageLookup(images, (key for key, _ in data.pairs)) as lookup:
        _rows(data.pairs, lookup, report, samples, limit)
    report.kept = len(samples)
    return samples, report.emit()


def _rows(pairs: list[tuple[str, object]], lookup: ImageLookup, report: LoadReport, samples: list[Sample],
          limit: int | None) -> None:
    """Check each (image name, annotation) pair in file order; keep the samples, count the skips."""
    for key, row in pairs:  # a repeated key is a row of its own (a doubled line: a duplicate)
        if limit is not None and len(samples) >= limit:
            break
        report.rows += 1
        if report.duplicate((key, row), key):
            continue
        if not isinstance(row, dict):
            report.skip(MALFORMED, key)
            continue
        incidents, why, what = _labels(row.get("incidents"), NUM_INCIDENTS, incident_index)
        if not why:
            places, why, what = _labels(row.get("places"), NUM_PLACES, place_index)
        if why:
            report.skip(why, what)
            continue
        if (incidents < 0).all() and (places < 0).all():
            report.skip(NO_LABELS, key)
            continue
        path, problem = lookup(key)
        if problem:
            report.skip(problem, path)
            continue
        samples.append(
            Sample(uid=f"incidents/{key}", source="incidents", image=str(path), task=DEFAULT_TASK,
                   incidents=incidents, places=places)
        )
