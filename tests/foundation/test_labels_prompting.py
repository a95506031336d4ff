"""Label orders and the prompt/target text contract shared by training and the engine."""

from __future__ import annotations

import pytest

from ember.labels import (
    INCIDENT_LABELS,
    PLACE_LABELS,
    ROBOT_DISPLAY_NAMES,
    ROBOT_TYPES,
    parse_robot_set,
    robot_index,
)
from ember.prompting import format_prompt, format_target, parse_generation


def test_label_lists_match_the_shared_category_files(shared_data):
    incidents = [x for x in (shared_data / "incidents" / "incidents.txt").read_text().splitlines() if x.strip()]
    places = [x for x in (shared_data / "incidents" / "places.txt").read_text().splitlines() if x.strip()]
    assert list(INCIDENT_LABELS) == incidents and len(INCIDENT_LABELS) == 43
    assert list(PLACE_LABELS) == places and len(PLACE_LABELS) == 49
    assert ROBOT_TYPES == ("drone", "humanoid", "wheeled", "legged", "underwater")
    assert ROBOT_DISPLAY_NAMES[2] == "Robot with Wheels" and ROBOT_DISPLAY_NAMES[3] == "Robot with Legs"


def test_robot_names_parse_from_every_spelling():
    assert parse_robot_set("Robot with Legs, Drone") == [0, 3]
    assert parse_robot_set(" underwater robot ,  Underwater Robot") == [4]
    assert robot_index("wheeled") == 2
    with pytest.raises(ValueError, match="unknown robot type 'Submarine'"):
        parse_robot_set("Drone, Submarine")
    with pytest.raises(ValueError, match="empty robot set"):
        parse_robot_set(" , ")


def test_target_parses_back_to_what_was_formatted():
    text = format_target("Smoke over trees; aerial view first.", [0, 3], [(1, "Fly over the fire", 0), (2, "Carry hoses", 3)])
    parsed = parse_generation(text)
    assert parsed.reasoning == "Smoke over trees; aerial view first."
    assert parsed.robot_types == ["drone", "legged"]
    assert [(s.order, s.description, s.robot_type) for s in parsed.steps] == [
        (1, "Fly over the fire", "drone"),
        (2, "Carry hoses", "legged"),
    ]
    assert format_prompt("  Find \n survivors ").endswith("Task: Find survivors\n<reasoning>")


def test_truncated_or_garbled_generation_never_raises():
    parsed = parse_generation("some thoughts<answer>Drone, Banana<plan>1. Fly [Drone]\n2. Walk [Bana")
    assert parsed.robot_types == ["drone"]
    assert parsed.steps[0].robot_type == "drone"
    assert parse_generation("").robot_types == []
