"""The training loop shared by the four stages (nanoGPT style), and a whole `ember-train` run.

Output directory:
    config.yaml, tokenizer.json, summary.json, data/ (generated data when no --data-dir)
    stage{k}_{name}/checkpoints/step_*.pt, final.pt, metrics.jsonl, loss.png, emissions.csv
Stage k starts from stage k-1's final.pt; `--resume` continues a stage from its newest step
checkpoint exactly (same batches, same RNG, same optimizer and schedule).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint_format import load_checkpoint
from .config import STAGE_NAMES, Config, InstructStage
from .data.build import SourceCache, build_stage_dataset, corpus, resolve_dirs
from .data.dataset import Collator
from .data.sampler import ResumableSampler
from .data.synth import synth_all
from .distill import TeacherLogits
from .distributed import DistContext
from .model import EmberVLM
from .optim import build_optimizer, build_scheduler
from .stages import STAGE_LOSSES
from .tokenizer import build_tokenizer, load_tokenizer, pad_id, save_tokenizer
from .tracking import Emissions, MetricsLog, WandbRun, plot_losses, read_metrics
from .train_state import (
    DataPosition,
    latest_checkpoint,
    prune,
    rng_state,
    save_train_checkpoint,
    set_rng_state,
)

log = logging.getLogger("ember_training.train")


class TrainError(RuntimeError):
    """A run that cannot start or continue (message says what to do)."""


@dataclass
class StageResult:
    stage: int
    name: str
    steps: int
    first_loss: float | None
    last_loss: float | None
    seconds: float
    emissions_kg: float | None
    checkpoint: str
    skipped: bool = False


def stage_dir(out: Path, k: int) -> Path:
    return out / f"stage{k}_{STAGE_NAMES[k - 1]}"


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def freeze_unused(model: torch.nn.Module, loss_of, batch: dict, autocast) -> list[str]:
    """Freeze the parameters a stage's loss never reaches (probed with one forward/backward on
    `batch`): the stage then leaves them exactly as they were, and DDP sees only parameters
    that receive gradients. Returns the frozen names."""
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}  # BatchNorm statistics
    with autocast:
        loss, _ = loss_of(model, batch)
    loss.backward()
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
    frozen = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    names = set(frozen)
    for n, p in model.named_parameters():
        p.grad = None
        if n in names:
            p.requires_grad_(False)
    return frozen


def _prefixes(names: list[str]) -> list[str]:
    """Module prefixes (two levels) of parameter names, for a short log line."""
    return sorted({".".join(n.split(".")[:2]) for n in names})


class Trainer:
    """One ember-train run over an output directory."""

    def __init__(
        self, cfg: Config, output_dir: str | Path, data_dir: str | Path | None = None,
        resume: bool = False, ctx: DistContext | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(output_dir)
        self.resume = resume
        self.ctx = ctx or DistContext()
        self.dirs, self._needs_synth = resolve_dirs(cfg, data_dir, self.out)
        self.cache: SourceCache | None = None
        self.tok = None
        if self.ctx.device.type == "cpu" and cfg.train.cpu_threads:
            torch.set_num_threads(cfg.train.cpu_threads)  # small models: more threads mostly spin

    # ------------------------------------------------------------------ setup
    def prepare(self) -> None:
        """Generated data (if no data dir), the data sources, and the run's tokenizer."""
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            if self._needs_synth:
                log.info("no data directory given: generating synthetic data in %s", self.dirs.data)
                synth_all(self.dirs.data, self.cfg.data.synth)
        self.ctx.barrier()
        self.cache = SourceCache(self.cfg, self.dirs)
        self.tok = self._tokenizer()
        vocab = self.tok.get_vocab_size()
        if vocab > self.cfg.model.vocab_size:
            raise TrainError(f"the tokenizer has {vocab} tokens but model.vocab_size is {self.cfg.model.vocab_size}")

    def _tokenizer(self):
        path = self.out / "tokenizer.json"
        if not path.is_file() and self.ctx.is_main:
            t = self.cfg.tokenizer
            spec = {"kind": t.kind, "vocab_size": t.vocab_size, "path": t.path, "min_frequency": t.min_frequency}
            texts = corpus(self.cfg, self.cache, list(STAGE_NAMES)) if spec["kind"] == "bpe" and not spec["path"] else None
            log.info("building the %s tokenizer -> %s", spec["kind"], path)
            save_tokenizer(build_tokenizer(spec, texts), path)
        self.ctx.barrier()
        return load_tokenizer(path)

    # ------------------------------------------------------------------ stages
    def run(self, stages: list[int]) -> list[StageResult]:
        if self.tok is None:
            self.prepare()
        results = [self.run_stage(k) for k in stages]
        if self.ctx.is_main:
            self._write_summary(results)
        return results

    def _init_weights(self, k: int, model: EmberVLM) -> None:
        if k == 1:
            return
        prev = stage_dir(self.out, k - 1) / "final.pt"
        if not prev.is_file():
            raise TrainError(f"stage {k} starts from stage {k - 1}'s final checkpoint, which is missing: {prev}")
        ckpt = load_checkpoint(prev)
        if ckpt["tokenizer"] != self.tok.to_str():
            raise TrainError(f"{prev} was trained with another tokenizer than {self.out / 'tokenizer.json'}")
        model.load_state_dict(ckpt["model"])
        log.info("stage %d starts from %s (step %d)", k, prev, ckpt["step"])

    def _loader(self, name: str, batch_size: int) -> tuple[Any, ResumableSampler, DataLoader]:
        st = self.cfg.stages.get(name)
        teacher = None
        if isinstance(st, InstructStage) and st.teacher_logits:
            teacher = TeacherLogits(st.teacher_logits, self.tok)
            if teacher.vocab_size != self.cfg.model.vocab_size:
                raise TrainError(f"teacher logits have vocab {teacher.vocab_size}, model.vocab_size is {self.cfg.model.vocab_size}")
        dataset = build_stage_dataset(name, self.cfg, self.cache, self.tok, teacher)
        sampler = ResumableSampler(dataset, self.ctx.world_size, self.ctx.rank, self.cfg.train.seed)
        if sampler.num_samples < batch_size:
            raise TrainError(f"stage {name}: {sampler.num_samples} samples per rank, fewer than batch_size {batch_size}")
        loader = DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
            collate_fn=Collator(pad_id(self.tok), teacher.k if teacher else 0),
            num_workers=self.cfg.data.num_workers, pin_memory=self.ctx.device.type == "cuda",
            generator=torch.Generator(),  # keeps the global RNG (dropout) out of the loader
        )
        return dataset, sampler, loader

    def run_stage(self, k: int, stop_at: int | None = None) -> StageResult:
        """Train stage k (1-based) to its configured steps, from scratch or from its last checkpoint.

        `stop_at` ends this call after that step with a step checkpoint (and no final.pt),
        as an interruption would: a later call with resume=True continues from there."""
        cfg, ctx = self.cfg, self.ctx
        name = STAGE_NAMES[k - 1]
        st = cfg.stages.get(name)
        sdir = stage_dir(self.out, k)
        final = sdir / "final.pt"
        if final.is_file():
            if not self.resume:
                raise TrainError(f"{final} exists: pass --resume to continue this run, or use a new --output-dir")
            log.info("stage %d (%s) already complete: %s", k, name, final)
            return self._result_from_disk(k, sdir, skipped=True)
        ckpt = latest_checkpoint(sdir) if self.resume else None
        if not self.resume and (sdir / "checkpoints").is_dir() and any((sdir / "checkpoints").iterdir()):
            raise TrainError(f"{sdir} has checkpoints: pass --resume to continue, or use a new --output-dir")
        if ctx.is_main:
            sdir.mkdir(parents=True, exist_ok=True)
        batch_size = st.batch_size or cfg.train.batch_size
        total = st.steps

        torch.manual_seed(cfg.train.seed + k)
        model = EmberVLM(cfg.model)
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
        else:
            self._init_weights(k, model)
        model.to(ctx.device)
        model.train()
        core = model
        loss_fn = STAGE_LOSSES[name]
        dataset, sampler, loader = self._loader(name, batch_size)
        cuda = ctx.device.type == "cuda"
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[cfg.train.precision]
        use_amp = cuda and dtype != torch.float32
        probe = _to_device(loader.collate_fn([dataset[i] for i in range(batch_size)]), ctx.device)
        autocast = torch.autocast(ctx.device.type, dtype=dtype, enabled=use_amp)
        frozen = freeze_unused(core, lambda m, b: loss_fn(m, b, st), probe, autocast)
        if frozen:
            log.info("stage %d (%s) does not train: %s", k, name, ", ".join(_prefixes(frozen)))
        if ctx.enabled:
            model = DDP(model, device_ids=[ctx.local_rank] if cuda else None, find_unused_parameters=True)
        opt = build_optimizer(core, cfg.train, st.lr or cfg.train.lr)
        sched = build_scheduler(opt, cfg.train, total)
        scaler = torch.amp.GradScaler("cuda") if use_amp and dtype == torch.float16 else None
        pos, step = DataPosition(), 0
        if ckpt is not None:
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            pos = DataPosition(**ckpt["data_position"])
            step = int(ckpt["step"])
            rngs = ckpt["rng"]
            set_rng_state(rngs[ctx.rank] if ctx.rank < len(rngs) else rngs[0])
            log.info("stage %d resumes at step %d from %s", k, step, ckpt["path"])
            del ckpt

        metrics = MetricsLog(sdir / "metrics.jsonl", resume_step=step) if ctx.is_main else None
        wandb = WandbRun(cfg.tracking.wandb_project, f"{self.out.name}-stage{k}", cfg.to_dict()) if ctx.is_main else None
        batches = self._batches(dataset, sampler, loader, pos, batch_size)
        bar = tqdm(total=total, initial=step, desc=f"stage {k} {name}", unit="step", dynamic_ncols=True,
                   disable=not (ctx.is_main and cfg.tracking.progress))
        t_start = time.time()
        emissions = Emissions(sdir, f"ember-stage{k}-{name}", cfg.tracking.country_iso_code,
                              cfg.tracking.codecarbon and ctx.is_main)
        with emissions:
            while step < total:
                logs: dict[str, float] = {}
                for micro in range(cfg.train.grad_accum):
                    batch = _to_device(next(batches), ctx.device)
                    last = micro == cfg.train.grad_accum - 1
                    sync = contextlib.nullcontext() if last or not ctx.enabled else model.no_sync()
                    with sync, torch.autocast(ctx.device.type, dtype=dtype, enabled=use_amp):
                        loss, parts = loss_fn(model, batch, st)
                    scaled = loss / cfg.train.grad_accum
                    (scaler.scale(scaled) if scaler else scaled).backward()
                    for key, value in {"loss": loss.item(), **parts}.items():
                        logs[key] = logs.get(key, 0.0) + value / cfg.train.grad_accum
                if scaler:
                    scaler.unscale_(opt)
                clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(core.parameters(), clip)
                if scaler:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
                lr = sched.get_last_lr()[0]
                sched.step()
                step += 1
                logs["loss"] = ctx.mean(logs["loss"])
                record = {"step": step, **logs, "lr": lr, "grad_norm": float(grad_norm), "epoch": pos.epoch,
                          "time": round(time.time() - t_start, 3)}
                if ctx.is_main:
                    if step % cfg.train.log_every == 0 or step == total:
                        metrics.write(record)
                        wandb.log(record)
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{lr:.2e}")
                stopping = stop_at is not None and step >= stop_at and step < total
                if (step % cfg.train.checkpoint_every == 0 and step < total) or stopping:
                    path = sdir / "checkpoints" / f"step_{step:06d}.pt"
                    self._save(path, core, step, name, opt, sched, scaler, pos, total)
                    if ctx.is_main:
                        prune(sdir, cfg.train.keep_checkpoints)
                if stopping:
                    break
            else:
                self._save(final, core, step, name, opt, sched, scaler, pos, total)
        bar.close()
        if ctx.is_main:
            metrics.close()
            wandb.finish()
            if cfg.tracking.plots:
                plot_losses(sdir / "metrics.jsonl", sdir / "loss.png", f"stage {k}: {name}")
        ctx.barrier()
        return self._result_from_disk(k, sdir, seconds=time.time() - t_start, emissions_kg=emissions.kg)

    def _batches(self, dataset, sampler: ResumableSampler, loader: DataLoader, pos: DataPosition, batch_size: int):
        """Endless batches across epochs; `pos` tracks epoch and batches consumed (for checkpoints)."""
        while True:
            sampler.set_epoch(pos.epoch)
            dataset.set_epoch(pos.epoch)
            sampler.set_start(pos.batches * batch_size)
            for batch in loader:
                pos.batches += 1
                yield batch
            pos.epoch += 1
            pos.batches = 0

    def _save(self, path: Path, model: EmberVLM, step: int, stage: str, opt, sched, scaler,
              pos: DataPosition, total: int) -> None:
        rngs = self.ctx.gather(rng_state())  # every rank's RNG (collective: all ranks call it)
        if self.ctx.is_main:
            save_train_checkpoint(
                path, model=model, config=self.cfg.to_dict(), tokenizer=self.tok, step=step, stage=stage,
                optimizer=opt, scheduler=sched, scaler=scaler, position=pos, rng_states=rngs, total_steps=total,
            )
        self.ctx.barrier()

    # ------------------------------------------------------------------ records
    def _result_from_disk(self, k: int, sdir: Path, seconds: float = 0.0, emissions_kg: float | None = None,
                          skipped: bool = False) -> StageResult:
        rows = read_metrics(sdir / "metrics.jsonl") if (sdir / "metrics.jsonl").is_file() else []
        return StageResult(
            stage=k, name=STAGE_NAMES[k - 1], steps=rows[-1]["step"] if rows else 0,
            first_loss=rows[0]["loss"] if rows else None, last_loss=rows[-1]["loss"] if rows else None,
            seconds=round(seconds, 2), emissions_kg=emissions_kg, checkpoint=str(sdir / "final.pt"), skipped=skipped,
        )

    def _write_summary(self, results: list[StageResult]) -> None:
        summary = {
            "config": self.cfg.source,
            "output_dir": str(self.out),
            "data_dir": str(self.dirs.data),
            "robot_selection_dir": str(self.dirs.robot_selection),
            "data": self.cache.reports() if self.cache else {},
            "stages": [dataclasses.asdict(r) for r in results],
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        lines = ["stage          steps  first loss  last loss   seconds  emissions kg"]
        for r in results:
            first = f"{r.first_loss:.4f}" if r.first_loss is not None else "-"
            last = f"{r.last_loss:.4f}" if r.last_loss is not None else "-"
            kg = f"{r.emissions_kg:.3g}" if r.emissions_kg is not None else "-"
            note = " (already done)" if r.skipped else ""
            lines.append(f"{r.stage} {r.name:<11} {r.steps:>6}  {first:>10}  {last:>9}  {r.seconds:>8.1f}  {kg:>12}{note}")
        print("\n".join(lines), flush=True)

