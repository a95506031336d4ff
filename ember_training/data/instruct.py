"""Instruction loaders: LLaVA-Instruct conversations and VQA v2 (questions joined with answers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ember.prompting import EOS_TOKEN, IMAGE_TOKEN, MAX_TASK_CHARS

from .common import (
    MALFORMED,
    NO_ANSWER,
    DataError,
    LoadReport,
    Sample,
    clean_text,
    read_json,
)
from .images import ImageLookup, check_image


def _turn_text(turn: object, role: str) -> str | None:
    if not isinstance(turn, dict) or turn.get("from") != role:
        return None
    value = turn.get("value")
    return clean_text(value.replace(IMAGE_TOKEN, " ")) if isinstance(value, str) else None


def _with_history(history: list[tuple[str, str]], question: str) -> str:
    """The task text of one turn: earlier turns as 'Q: .. A: ..', then the question (newest kept)."""
    if not history:
        return question[-MAX_TASK_CHARS:]
    text = " ".join(f"Q: {q} A: {a}" for q, a in history) + f" Q: {question}"
    return text[-MAX_TASK_CHARS:]


def load_llava(conversations: Path, images: Path, limit: int | None = None) -> tuple[list[Sample], LoadReport]:
    """LLaVA-Instruct JSON: [{id, image, conversations: [{from: human|gpt, value}, ...]}].

    Every (human, gpt) turn becomes a sample; the task holds the question and the earlier turns,
    the target is the answer. A conversation with a broken turn is skipped as a whole.
    """
    report = LoadReport("llava")
    data = read_json(conversations, "llava")
    if not isinstance(data, list):
        raise DataError(f"llava: {conversations} is not a list of conversations")
    samples: list[Sample] = []
    names = (row.get("image") if isinstance(row, dict) else None for row in data)
    with ImageLookup(images, (n for n in names if isinstance(n, str)), remember=True) as lookup:
        _llava_rows(data, lookup, report, samples, limit)
    report.kept = len(samples)
    return samples, report.emit()


def _llava_rows(data: list, lookup: ImageLookup, report: LoadReport, samples: list[Sample], limit: int | None) -> None:
    for i, row in enumerate(data):
        if limit is not None and len(samples) >= limit:
            break
        report.rows += 1
        if report.duplicate(row, f"row {i}"):
            continue
        convs = row.get("conversations") if isinstance(row, dict) else None
        image = row.get("image") if isinstance(row, dict) else None
        if not isinstance(convs, list) or len(convs) < 2 or len(convs) % 2 or not isinstance(image, str):
            report.skip(MALFORMED, f"row {i}")
            continue
        pairs = [(_turn_text(convs[k], "human"), _turn_text(convs[k + 1], "gpt")) for k in range(0, len(convs), 2)]
        if any(q is None or a is None for q, a in pairs):
            report.skip(MALFORMED, f"row {i}")
            continue
        path, problem = lookup(image)  # each image checked once (remember: LLaVA asks several questions of most)
        if problem:
            report.skip(problem, path)
            continue
        history: list[tuple[str, str]] = []
        uid = row.get("id", i)
        for turn, (q, a) in enumerate(pairs):
            samples.append(
                Sample(uid=f"llava/{uid}#{turn}", source="llava", image=str(path),
                       task=_with_history(history, q), target=a + EOS_TOKEN)
            )
            history.append((q, a))


def load_vqa(
    questions: Path, annotations: Path, images: Path, limit: int | None = None
) -> tuple[list[Sample], LoadReport]:
    """VQA v2: questions {questions: [{question_id, image_id, question}], data_subtype} joined by
    question_id with annotations {annotations: [{question_id, multiple_choice_answer, answers}]}.

    The consensus answer (`multiple_choice_answer`) is the target; a question without an
    annotation is skipped ("no answer").
    """
    report = LoadReport("vqa")
    qdata = read_json(questions, "vqa")
    adata = read_json(annotations, "vqa")
    if not isinstance(qdata, dict) or not isinstance(qdata.get("questions"), list):
        raise DataError(f"vqa: {questions} has no 'questions' list")
    if not isinstance(adata, dict) or not isinstance(adata.get("annotations"), list):
        raise DataError(f"vqa: {annotations} has no 'annotations' list")
    subtype = qdata.get("data_subtype", "train2014")
    answers: dict[int, str] = {}
    for ann in adata["annotations"]:
        if not isinstance(ann, dict) or not isinstance(ann.get("question_id"), int):
            continue
        answer = clean_text(ann.get("multiple_choice_answer"))
        if answer is not None:
            answers[ann["question_id"]] = answer
    samples: list[Sample] = []

    def vqa_path(image_id: int) -> Path:
        return images / f"COCO_{subtype}_{image_id:012d}.jpg"

    def check(name: str) -> tuple[Path, str | None]:
        return Path(name), check_image(name)

    ids = (q.get("image_id") if isinstance(q, dict) else None for q in qdata["questions"])
    with ImageLookup(images, (str(vqa_path(i)) for i in ids if isinstance(i, int)), lookup=check,
                     remember=True) as lookup:
        _vqa_rows(qdata["questions"], answers, vqa_path, lookup, report, samples, limit)
    report.kept = len(samples)
    return samples, report.emit()


def _vqa_rows(questions: list, answers: dict[int, str], vqa_path: Callable[[int], Path], lookup: ImageLookup,
              report: LoadReport, samples: list[Sample], limit: int | None) -> None:
    for q in questions:
        if limit is not None and len(samples) >= limit:
            break
        report.rows += 1
        if report.duplicate(q, f"question {report.rows - 1}"):
            continue
        qid = q.get("question_id") if isinstance(q, dict) else None
        image_id = q.get("image_id") if isinstance(q, dict) else None
        text = clean_text(q.get("question")) if isinstance(q, dict) else None
        if not isinstance(qid, int) or not isinstance(image_id, int) or text is None:
            report.skip(MALFORMED, f"question {report.rows - 1}")
            continue
        if qid not in answers:
            report.skip(NO_ANSWER, f"question_id {qid}")
            continue
        path, problem = lookup(str(vqa_path(image_id)))  # each image checked once (remember: ~5 questions each)
        if problem:
            report.skip(problem, path)
            continue
        samples.append(
            Sample(uid=f"vqa/{qid}", source="vqa", image=str(path), task=text, target=answers[qid] + EOS_TOKEN)
        )
