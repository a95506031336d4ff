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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint_format import CheckpointError, load_checkpoint
from .config import STAGE_NAMES, Config, InstructStage
from .data.build import (
    SourceCache,
    build_eval_dataset,
    build_stage_dataset,
    corpus,
    resolve_dirs,
    share_stage,
)
from .data.dataset import Collator
from .data.sampler import ResumableSampler, StageBatches
from .data.synth import synth_all
from .distill import TeacherLogits
from .distributed import DistContext, odd_ranks
from .evaluate import generation_metrics, head_metrics, head_outputs
from .model import EmberVLM
from .optim import build_optimizer, build_scheduler
from .stages import STAGE_LOSSES
from .stop_signals import Stopped, StopSignals, ignore_stop_signals, signal_name
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
class StageRun:
    """Everything one stage's loop holds (the model may be DDP-wrapped; `core` never is)."""

    k: int
    name: str
    st: Any
    sdir: Path
    core: EmberVLM
    model: torch.nn.Module
    dataset: Any
    sampler: ResumableSampler
    loader: DataLoader
    batch_size: int
    total: int
    autocast: Callable[[], Any]
    opt: Any = None
    sched: Any = None
    scaler: Any = None
    pos: DataPosition = field(default_factory=DataPosition)
    step: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    """{"samples": n, "digest": sha256 of the rows}: saved in each checkpoint, compared on resume"""


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
    evaluation: dict[str, Any] = field(default_factory=dict)


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


RESUME_FREE_KEYS: tuple[str, ...] = (
    "tracking.", "robot_selection.", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.cpu_threads", "data.num_workers", "data.max_eval_samples", "data.data_dir", "data.robot_selection_dir",
)
"""Config keys (prefixes) a resumed stage may change: logging, cadence, threads, where the data is."""


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"train.lr": 0.001, ...} of a nested config dict (lists stay values)."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def config_changes(saved: dict[str, Any], current: dict[str, Any], stage: str) -> list[str]:
    """'key: saved -> current' for each key that differs and would change stage `stage`'s training
    (other stages' sections and RESUME_FREE_KEYS may differ; keys only one side knows are skipped)."""
    a, b = _flatten(saved), _flatten(current)
    others = tuple(f"stages.{n}." for n in STAGE_NAMES if n != stage)
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(a.keys() & b.keys())
            if a[k] != b[k] and not k.startswith(RESUME_FREE_KEYS + others)]


def _prefixes(names: list[str]) -> list[str]:
    """Module prefixes (two levels) of parameter names, for a short log line."""
    return sorted({".".join(n.split(".")[:2]) for n in names})


class Trainer:
    """One ember-train run over an output directory."""

    def __init__(
        self, cfg: Config, output_dir: str | Path, data_dir: str | Path | None = None,
        resume: bool = False, ctx: DistContext | None = None, stop: StopSignals | None = None,
    ) -> None:
        self.cfg = cfg
        self.stop = stop or StopSignals()  # not installed: no signal is ever recorded (library use, tests)
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
        self.cache = SourceCache(self.cfg, self.dirs, self.ctx)
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
            if texts is not None and self.cfg.robot_selection.enabled:  # issue 7: generic words for the BPE
                from .robot_selection.recipe import tokenizer_corpus_extra

                texts = [*texts, *tokenizer_corpus_extra(self.cfg.robot_selection)]
            log.info("building the %s tokenizer -> %s", spec["kind"], path)
            save_tokenizer(build_tokenizer(spec, texts), path)
        self.ctx.barrier()
        return load_tokenizer(path)

    # ------------------------------------------------------------------ stages
    def run(self, stages: list[int]) -> list[StageResult]:
        if self.tok is None:
            self.prepare()
        results = [self.run_stage(k) for k in stages]
        recipe = None
        if self.cfg.robot_selection.enabled and 4 in stages and self.ctx.is_main:  # issue 7 recipe phase
            from .robot_selection.recipe import run_recipe

            recipe = run_recipe(self)
        self.ctx.barrier()
        if self.ctx.is_main:
            self._write_summary(results, recipe)
        return results

    def _init_weights(self, k: int, model: EmberVLM) -> None:
        if k == 1:
            if self.cfg.robot_selection.enabled:  # issue 7: token embeddings from the teacher
                from .robot_selection.recipe import init_token_embeddings

                init_token_embeddings(model, self.tok, self.cfg.robot_selection)
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
        sampler = ResumableSampler(dataset, self.ctx.world_size, self.ctx.rank, self.cfg.train.seed, batch_size)
        if sampler.repeats > 1:
            log.info("stage %s: %d samples for %d rank(s) x batch %d: each epoch passes %d times over them",
                     name, len(dataset), self.ctx.world_size, batch_size, sampler.repeats)
        loader = DataLoader(  # one iterator per stage, epoch after epoch (StageBatches)
            dataset, batch_sampler=StageBatches(sampler, batch_size),
            collate_fn=Collator(pad_id(self.tok), teacher.k if teacher else 0),
            num_workers=self.cfg.data.num_workers, pin_memory=self.ctx.device.type == "cuda",
            generator=torch.Generator(),  # keeps the global RNG (dropout) out of the loader
            worker_init_fn=ignore_stop_signals,  # a signal to every process of the job: the trainer stops them
        )
        return dataset, sampler, loader

    def run_stage(self, k: int, stop_at: int | None = None) -> StageResult:
        """Train stage k (1-based) to its configured steps, from scratch or from its last checkpoint.

        `stop_at` ends this call after that step with a step checkpoint (and no final.pt),
        as an interruption would: a later call with resume=True continues from there."""
        name = STAGE_NAMES[k - 1]
        sdir = stage_dir(self.out, k)
        if (sdir / "final.pt").is_file():
            if not self.resume:
                raise TrainError(f"{sdir / 'final.pt'} exists: pass --resume to continue this run, or use a new --output-dir")
            log.info("stage %d (%s) already complete: %s", k, name, sdir / "final.pt")
            try:
                final = load_checkpoint(sdir / "final.pt")
            except CheckpointError as e:
                raise TrainError(f"{e}; delete it to finish stage {k} again from its newest step checkpoint "
                                 "(--resume)") from None
            changes = config_changes(final["config"], self.cfg.to_dict(), name)
            if changes:
                log.warning("stage %d was trained with another config (kept as it is; a new --output-dir "
                            "retrains it): %s", k, "; ".join(changes))
            return self._result_from_disk(k, sdir, skipped=True)
        if not self.resume and (sdir / "checkpoints").is_dir() and any((sdir / "checkpoints").iterdir()):
            raise TrainError(f"{sdir} has checkpoints: pass --resume to continue, or use a new --output-dir")
        if self.ctx.is_main:
            sdir.mkdir(parents=True, exist_ok=True)
        ckpt = latest_checkpoint(sdir) if self.resume else None
        if ckpt is not None and (changes := config_changes(ckpt["config"], self.cfg.to_dict(), name)):
            # the optimizer and scheduler states would keep the old lr/betas/decay, the data position
            # would point elsewhere: not a continuation of that run
            raise TrainError(f"cannot resume stage {k} from {ckpt['path']}: the config differs from the one it was "
                             f"written with ({'; '.join(changes)}); restore those values, or train the stage "
                             f"in a new --output-dir")
        run = self._setup(k, ckpt)
        t_start = time.time()
        emissions = Emissions(sdir, f"ember-stage{k}-{name}", self.cfg.tracking.country_iso_code,
                              self.cfg.tracking.codecarbon and self.ctx.is_main)
        with emissions:
            finished = self._train(run, stop_at, t_start)
        evaluation: dict[str, Any] = {}
        if finished:
            evaluation = self._evaluate(run)
            self.ctx.barrier()  # rank 0 evaluates alone: the others wait here, not in _save's gather
            with self.stop.deferred():  # a stop signal lets final.pt be written, then ends the run
                self._save(sdir / "final.pt", run, evaluation)
        if self.ctx.is_main and self.cfg.tracking.plots:
            plot_losses(sdir / "metrics.jsonl", sdir / "loss.png", f"stage {k}: {name}")
        self.ctx.barrier()
        return self._result_from_disk(k, sdir, seconds=time.time() - t_start, emissions_kg=emissions.kg)

    def _setup(self, k: int, ckpt: dict[str, Any] | None) -> StageRun:
        """Model (from the previous stage or the resume checkpoint), data, optimizer, schedule, state."""
        cfg, ctx = self.cfg, self.ctx
        name = STAGE_NAMES[k - 1]
        st = cfg.stages.get(name)
        batch_size = st.batch_size or cfg.train.batch_size
        torch.manual_seed(cfg.train.seed + k)
        model = EmberVLM(cfg.model)
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
        else:
            self._init_weights(k, model)
        model.to(ctx.device).train()
        share_stage(name, cfg, self.cache)  # collective: each node's local rank 0 loads, its other ranks map
        dataset, sampler, loader = self._loader(name, batch_size)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[cfg.train.precision]
        use_amp = ctx.device.type == "cuda" and dtype != torch.float32
        run = StageRun(k=k, name=name, st=st, sdir=stage_dir(self.out, k), core=model, model=model,
                       dataset=dataset, sampler=sampler, loader=loader, batch_size=batch_size, total=st.steps,
                       autocast=lambda: torch.autocast(ctx.device.type, dtype=dtype, enabled=use_amp))
        # a batch's worth of samples (a dataset smaller than the batch is repeated, as the sampler does)
        probe = _to_device(loader.collate_fn([dataset[i % len(dataset)] for i in range(batch_size)]), ctx.device)
        frozen = freeze_unused(model, lambda m, b: STAGE_LOSSES[name](m, b, st), probe, run.autocast())
        if frozen:
            log.info("stage %d (%s) does not train: %s", k, name, ", ".join(_prefixes(frozen)))
        if ctx.rank:  # dropout: a stream per rank (rank 0 keeps the single-process one); a resume restores it
            torch.manual_seed(cfg.train.seed + k + 1000 * ctx.rank)
        run.data = {"samples": len(dataset), "digest": dataset.digest()}
        if ctx.enabled:
            ctx.barrier()  # ranks load their data at their own pace (rank 0 has every source from the tokenizer)
            self._check_same_data(k, name, run.data)
            run.model = DDP(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
                            find_unused_parameters=True)
        run.opt = build_optimizer(model, cfg.train, st.lr or cfg.train.lr)
        run.sched = build_scheduler(run.opt, cfg.train, st.steps)
        run.scaler = torch.amp.GradScaler("cuda") if use_amp and dtype == torch.float16 else None
        if ckpt is not None:
            run.opt.load_state_dict(ckpt["optimizer"])
            run.sched.load_state_dict(ckpt["scheduler"])
            if run.scaler is not None and ckpt.get("scaler"):
                run.scaler.load_state_dict(ckpt["scaler"])
            run.pos = DataPosition(**ckpt["data_position"])
            run.step = int(ckpt["step"])
            rngs = ckpt["rng"]
            if ctx.rank < len(rngs):  # a rank the checkpoint does not know keeps its own seed (above)
                set_rng_state(rngs[ctx.rank])
            if len(rngs) != ctx.world_size and ctx.is_main:
                log.warning("stage %d was checkpointed by %d rank(s) and resumes with %d rank(s): the data "
                            "shards and random numbers differ from an uninterrupted run", k, len(rngs), ctx.world_size)
            saved = ckpt.get("data")
            if saved and saved != run.data and ctx.is_main:  # checkpoints before this check carry none
                log.warning("stage %d resumes on other data than it was checkpointed with (%d -> %d samples, rows "
                            "changed): it goes on, but its batches from here are not those of an uninterrupted run",
                            k, saved.get("samples", -1), run.data["samples"])
            log.info("stage %d resumes at step %d from %s", k, run.step, ckpt["path"])
        return run

    def _check_same_data(self, k: int, name: str, data: dict[str, Any]) -> None:
        """Every rank stops (TrainError) when the ranks loaded different rows for the stage (a node-local
        copy of the data that differs on one node): one all-gather of each rank's dataset digest."""
        values = self.ctx.gather((data["samples"], data["digest"]))
        odd = odd_ranks(values)
        if not odd:
            return
        ref = next(r for r in range(len(values)) if r not in odd)
        rest = " and the other ranks" if len(values) - len(odd) > 1 else ""
        differ = "; ".join(f"rank {r}: {values[r][0]} samples, digest {values[r][1][:12]}" for r in odd)
        raise TrainError(f"stage {k} ({name}): the ranks loaded different data ({differ}; rank {ref}{rest}: "
                         f"{values[ref][0]} samples, digest {values[ref][1][:12]}): every node must read the same "
                         f"dataset files (--data-dir, data.paths); compare the loaders' summary lines of each node")

    def _train(self, run: StageRun, stop_at: int | None, t_start: float) -> bool:
        """Optimizer steps until the stage's total (True) or `stop_at` (False); a stop signal ends
        them after the step in progress with a checkpoint of that step (Stopped)."""
        cfg, ctx = self.cfg, self.ctx
        metrics = MetricsLog(run.sdir / "metrics.jsonl", resume_step=run.step) if ctx.is_main else None
        wandb = WandbRun(cfg.tracking.wandb_project, f"{self.out.name}-stage{run.k}", cfg.to_dict()) if ctx.is_main else None
        bar = tqdm(total=run.total, initial=run.step, desc=f"stage {run.k} {run.name}", unit="step",
                   dynamic_ncols=True, disable=not (ctx.is_main and cfg.tracking.progress))
        batches = self._batches(run)
        first_step = run.step
        try:
            ctx.barrier()  # rank 0 opened its logs (wandb.init may take a while) outside a timed collective
            with self.stop.deferred():
                while run.step < run.total:
                    logs, lr, grad_norm = self._step(run, batches)
                    record = {"step": run.step, **logs, "lr": lr, "grad_norm": grad_norm, "epoch": run.pos.epoch,
                              "time": round(time.time() - t_start, 3)}
                    if ctx.is_main:
                        if run.step % cfg.train.log_every == 0 or run.step == run.total:
                            metrics.write(record)
                            wandb.log(record)
                        bar.update(1)
                        bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{lr:.2e}")
                    # every rank stops at the same step: the largest signal number any rank has seen
                    signum = ctx.max_int(self.stop.signum or 0)
                    stopping = stop_at is not None and stop_at <= run.step < run.total
                    if (run.step % cfg.train.checkpoint_every == 0 and run.step < run.total) or stopping or signum:
                        if signum:
                            rank = f"rank {ctx.rank}: " if ctx.enabled else ""
                            log.warning("%s%s: stopping after step %d of stage %d (%s): writing its checkpoint",
                                        rank, signal_name(signum), run.step, run.k, run.name)
                        path = self._save_step(run)
                        if signum:
                            raise Stopped(signum, run.k, run.name, run.step, path)
                    if stopping:
                        return False
                if self._evaluates(run) and run.step > first_step:  # (every rank alike: a collective save)
                    # a stop signal during the held-out evaluation (minutes on a large validation set)
                    # must not cost the steps since the last periodic checkpoint: --resume evaluates again
                    self._save_step(run)
            return True
        finally:
            batches.close()  # the loader's workers stop before the evaluation and the next stage
            bar.close()
            if ctx.is_main:
                metrics.close()
                wandb.finish()

    def _step(self, run: StageRun, batches) -> tuple[dict[str, float], float, float]:
        """One optimizer step over train.grad_accum micro-batches; returns (logs, lr used, grad norm)."""
        cfg, ctx = self.cfg, self.ctx
        accum = cfg.train.grad_accum
        loss_fn = STAGE_LOSSES[run.name]
        logs: dict[str, float] = {}
        for micro in range(accum):
            batch = _to_device(next(batches), ctx.device)
            sync = run.model.no_sync() if ctx.enabled and micro < accum - 1 else contextlib.nullcontext()
            with sync:
                with run.autocast():
                    loss, parts = loss_fn(run.model, batch, run.st)
                scaled = loss / accum
                (run.scaler.scale(scaled) if run.scaler else scaled).backward()
            for key, value in {"loss": loss.item(), **parts}.items():
                logs[key] = logs.get(key, 0.0) + value / accum
        if run.scaler:
            run.scaler.unscale_(run.opt)
        clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(run.core.parameters(), clip))
        if run.scaler:
            run.scaler.step(run.opt)
            run.scaler.update()
        else:
            run.opt.step()
        run.opt.zero_grad(set_to_none=True)
        lr = run.sched.get_last_lr()[0]
        run.sched.step()
        run.step += 1
        return ctx.mean_dict(logs), lr, grad_norm  # the loss and its parts over every rank's batch

    def _save_step(self, run: StageRun) -> Path:
        """The step checkpoint of run.step (collective), then the oldest beyond keep_checkpoints pruned."""
        path = run.sdir / "checkpoints" / f"step_{run.step:06d}.pt"
        self._save(path, run)
        if self.ctx.is_main:
            prune(run.sdir, self.cfg.train.keep_checkpoints)
        return path

    def _evaluates(self, run: StageRun) -> bool:
        """Whether a held-out evaluation follows the stage's last step (stages 3 and 4, a validation split)."""
        return run.name in ("incidents", "reasoning") and self.cfg.data.val_fraction > 0

    def _evaluate(self, run: StageRun) -> dict[str, Any]:
        """Held-out evaluation after stages 3 and 4 (rank 0): metrics and robot thresholds."""
        if not self._evaluates(run) or not self.ctx.is_main:
            return {}
        model = run.core
        heads_set = build_eval_dataset(self.cfg, self.cache, self.tok, False, ("incidents", "robot_single"))
        if not len(heads_set):
            return {}
        metrics, thresholds = head_metrics(head_outputs(model, heads_set, self.tok, self.ctx.device, run.batch_size))
        if run.name == "reasoning":
            robots = build_eval_dataset(self.cfg, self.cache, self.tok, True, ("robot_single", "robot_multi"))
            metrics.update(generation_metrics(model, robots, self.tok, self.ctx.device, self.cfg.data.max_target_tokens))
        model.train()
        result = {"metrics": {f"stage{run.k}_{k}": v for k, v in metrics.items()}, "robot_thresholds": thresholds}
        (run.sdir / "eval.json").write_text(json.dumps(result, indent=2))
        log.info("stage %d held-out: %s", run.k, ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
        return result

    @staticmethod
    def _batches(run: StageRun):
        """Endless batches across epochs from one loader iterator (its workers start once), from
        run.pos on; run.pos tracks the epoch and the batches of it consumed (for checkpoints)."""
        pos, stream = run.pos, run.loader.batch_sampler
        stream.start_at(pos.epoch, pos.batches)
        pos.epoch, pos.batches = stream.epoch, stream.batches  # an old checkpoint's (e, whole epoch) is (e + 1, 0)
        # loader workers' global RNGs: a stream per rank and starting epoch (the data's own draws are
        # keyed by epoch, sample and copy, data/dataset.py, and do not use them)
        run.loader.generator.manual_seed(hash((run.sampler.seed, run.sampler.rank, pos.epoch)) % 2**63)
        batches = iter(run.loader)
        try:
            for batch in batches:
                pos.batches += 1
                if pos.batches == stream.per_epoch:
                    pos.epoch, pos.batches = pos.epoch + 1, 0
                yield batch
        finally:  # its workers stop now, also while an error's traceback still holds the iterator
            getattr(batches, "_shutdown_workers", lambda: None)()

    def _save(self, path: Path, run: StageRun, extra: dict[str, Any] | None = None) -> None:
        rngs = self.ctx.gather(rng_state())  # every rank's RNG (collective: all ranks call it)
        if self.ctx.is_main:
            save_train_checkpoint(
                path, model=run.core, config=self.cfg.to_dict(), tokenizer=self.tok, step=run.step, stage=run.name,
                optimizer=run.opt, scheduler=run.sched, scaler=run.scaler, position=run.pos, rng_states=rngs,
                total_steps=run.total, extra={**(extra or {}), "data": run.data},
            )
        self.ctx.barrier()

    # ------------------------------------------------------------------ records
    def _result_from_disk(self, k: int, sdir: Path, seconds: float = 0.0, emissions_kg: float | None = None,
                          skipped: bool = False) -> StageResult:
        rows = read_metrics(sdir / "metrics.jsonl") if (sdir / "metrics.jsonl").is_file() else []
        evaluation = json.loads((sdir / "eval.json").read_text()) if (sdir / "eval.json").is_file() else {}
        return StageResult(
            stage=k, name=STAGE_NAMES[k - 1], steps=rows[-1]["step"] if rows else 0,
            first_loss=rows[0]["loss"] if rows else None, last_loss=rows[-1]["loss"] if rows else None,
            seconds=round(seconds, 2), emissions_kg=emissions_kg, checkpoint=str(sdir / "final.pt"), skipped=skipped,
            evaluation=evaluation.get("metrics", {}),
        )

    def _write_summary(self, results: list[StageResult], recipe: dict | None = None) -> None:
        summary = {
            "config": self.cfg.source,
            "output_dir": str(self.out),
            "data_dir": str(self.dirs.data),
            "robot_selection_dir": str(self.dirs.robot_selection),
            "data": self.cache.reports() if self.cache else {},
            "stages": [dataclasses.asdict(r) for r in results],
        }
        if recipe is not None:
            summary["robot_selection"] = recipe
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        lines = ["stage          steps  first loss  last loss   seconds  emissions kg"]
        for r in results:
            first = f"{r.first_loss:.4f}" if r.first_loss is not None else "-"
            last = f"{r.last_loss:.4f}" if r.last_loss is not None else "-"
            kg = f"{r.emissions_kg:.3g}" if r.emissions_kg is not None else "-"
            note = " (already done)" if r.skipped else ""
            lines.append(f"{r.stage} {r.name:<11} {r.steps:>6}  {first:>10}  {last:>9}  {r.seconds:>8.1f}  {kg:>12}{note}")
        print("\n".join(lines), flush=True)

