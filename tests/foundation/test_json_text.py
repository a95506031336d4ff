"""Result files (eval reports, CV summaries) are standard JSON even when a metric is NaN or inf."""

from __future__ import annotations

import json
import math

import pytest

from ember.fsutil import json_text


def _strict_load(text: str):
    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_metrics_are_written_as_null():
    report = {"exact": math.nan, "folds": [0.5, math.inf, (1.0, -math.inf)], "per_robot": {"drone": {"f1": math.nan}},
              "n": 3, "ok": True, "name": "Inspect the pier’s pilings"}
    with pytest.raises(ValueError):
        _strict_load(json.dumps(report))  # what the reports wrote before
    loaded = _strict_load(json_text(report))
    assert loaded == {"exact": None, "folds": [0.5, None, [1.0, None]], "per_robot": {"drone": {"f1": None}},
                      "n": 3, "ok": True, "name": "Inspect the pier’s pilings"}
