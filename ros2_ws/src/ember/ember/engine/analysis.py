"""The result of one `EmberEngine.analyze` call (DESIGN §4)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ember.prompting import PlanStep


@dataclass
class Analysis:
    """Everything the engine says about one image and task.

    Score vectors follow the orders of `ember.labels`; `robot_scores` has one score per robot
    type (P(robot is in the right set)), `robot_types` is the selected set, best first, and
    `robot_source` says what decided it: "text-selector" (the bundle's distilled text selector,
    when a task is given) or "decoder-head" (the VLM's robot head, which also sees the image).
    `text` is the decoder's generation as written and `steps` its parsed plan; when the text
    selector decides and its file has a plan-step head, the first steps' `robot_type` is that
    head's (one robot per plan position, from the task text).
    """

    incident_type: str
    confidence: float
    incident_labels: list[str]
    incident_scores: list[float]
    place: str
    place_score: float
    robot_scores: list[float]
    robot_types: list[str]
    text: str
    reasoning: str
    steps: list[PlanStep] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    num_generated_tokens: int = 0
    model_version: str = ""
    robot_source: str = "decoder-head"

    def to_dict(self) -> dict:
        """JSON-ready dict (steps as dicts)."""
        return asdict(self)
