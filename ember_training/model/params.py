"""Per-component parameter counts (what `ember-train --print-params` prints)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class ParamRow:
    component: str
    total: int
    trainable: int


def _components(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """(name, parameters) per component; a decoder's tied embedding is counted once, under embeddings."""
    decoder = model.decoder.lm
    emb = [decoder.transformer.wte.weight, decoder.transformer.wpe.weight]
    emb_ids = {id(p) for p in emb}
    rows = [
        ("vision (RepViT)", list(model.vision.parameters())),
        ("fusion", list(model.fusion.parameters())),
        ("decoder embeddings", emb),
        ("decoder blocks", [p for p in decoder.parameters() if id(p) not in emb_ids]),
        ("reasoning", list(model.reasoning.parameters())),
        ("heads", list(model.heads.parameters())),
        (
            "contrastive projections",
            [*model.image_proj.parameters(), *model.text_proj.parameters(), model.logit_scale],
        ),
    ]
    return rows


def count_parameters(model: nn.Module) -> list[ParamRow]:
    """Rows per component, plus a final 'total' row; shared tensors are counted once."""
    seen: set[int] = set()
    out: list[ParamRow] = []
    for name, params in _components(model):
        total = trainable = 0
        for p in params:
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        out.append(ParamRow(name, total, trainable))
    rest = [p for p in model.parameters() if id(p) not in seen]
    if rest:
        out.append(ParamRow("other", sum(p.numel() for p in rest), sum(p.numel() for p in rest if p.requires_grad)))
    unique = {id(p): p for p in model.parameters()}.values()
    out.append(
        ParamRow("total", sum(p.numel() for p in unique), sum(p.numel() for p in unique if p.requires_grad))
    )
    return out


def format_param_table(model: nn.Module) -> str:
    """A table of total/trainable parameters per component; the last line is
    exactly `total_params=<int> trainable_params=<int>`."""
    rows = count_parameters(model)
    width = max(len(r.component) for r in rows)
    lines = [f"{'component':<{width}}  {'total':>12}  {'trainable':>12}", "-" * (width + 28)]
    for r in rows[:-1]:
        lines.append(f"{r.component:<{width}}  {r.total:>12,}  {r.trainable:>12,}")
    total = rows[-1]
    lines.append("-" * (width + 28))
    lines.append(f"{'total':<{width}}  {total.total:>12,}  {total.trainable:>12,}")
    lines.append(f"total_params={total.total} trainable_params={total.trainable}")
    return "\n".join(lines)
