"""Turning a fused incident and the required robot types into plan steps (pure Python).

The steps come from the model when it wrote a plan: the most confident reporter's generated
text is parsed with `ember.prompting.parse_generation`, and its steps for the required robot
types are kept. A required type the model gave no step gets a step from a short template
of what that kind of robot does at an incident, so every required type has work.
An operator task decided by its text (the text robot selector) gets one step per required
type instead: the task's own text with that type's part in it.
"""

from __future__ import annotations

from ember.prompting import MAX_TASK_CHARS, parse_generation
from ember.ros.allocation import Step
from ember.ros.fusion import Incident

TEMPLATES: dict[str, tuple[int, str]] = {
    "drone": (1, "Fly over the {where} and map the {what}; stream aerial video to the operators"),
    "legged": (2, "Cross the rough ground at the {where} and inspect blocked or collapsed areas"),
    "humanoid": (2, "Enter the {where}, search for people and help them to safety"),
    "underwater": (2, "Search the water near the {where} and inspect submerged structures"),
    "wheeled": (3, "Bring equipment and supplies to the {where} and carry casualties out"),
}
"""robot type -> (execution order, description template)"""

TASK_ROLES: dict[str, str] = {
    "drone": "from the air",
    "legged": "on foot over rough ground",
    "humanoid": "by hand, with tools and people",
    "underwater": "under water",
    "wheeled": "carrying equipment and supplies",
}
"""robot type -> its part in an operator task decided by its text"""


def template_step(robot_type: str, incident: Incident) -> tuple[int, str]:
    """(order, description) of the template step for a robot type at this incident."""
    order, text = TEMPLATES[robot_type]
    where = incident.place or "incident site"
    what = incident.label if incident.label else "incident"
    return order, text.format(where=where, what=what)


def task_steps(task_id: str, task: str, types: list[str]) -> list[Step]:
    """One step per required type of an operator task: its own text with the type's part."""
    text = " ".join(task.split())[:MAX_TASK_CHARS].rstrip(". ")
    return [
        Step(f"{task_id}/{n}", task_id, TEMPLATES[t][0], f"{text} ({TASK_ROLES[t]})", t)
        for n, t in enumerate(types, start=1)
    ]


def build_steps(task_id: str, incident: Incident | None, types: list[str], task: str = "") -> tuple[list[Step], str]:
    """Steps of a task for the required robot `types`; returns (steps, source) where source
    says where the steps came from ("model", "template", "model+template"; "task" when there is
    no incident to take them from: the task's own text)."""
    if incident is None:
        return task_steps(task_id, task, types), "task"
    model_steps = []
    best = incident.best_report()
    if best is not None and best.description:
        model_steps = [s for s in parse_generation(best.description).steps if s.robot_type in types and s.description]
    steps: list[Step] = []
    for s in model_steps:
        steps.append(Step(f"{task_id}/{len(steps) + 1}", task_id, max(int(s.order), 1), s.description, s.robot_type))
    covered = {s.robot_type for s in steps}
    templated = False
    for t in types:
        if t not in covered:
            order, text = template_step(t, incident)
            steps.append(Step(f"{task_id}/{len(steps) + 1}", task_id, order, text, t))
            templated = True
    source = "model+template" if model_steps and templated else ("model" if model_steps else "template")
    return steps, source
