"""Preemption: SIGTERM / SIGINT / SIGUSR1 end ember-train after the optimizer step in progress, with
a step checkpoint at that step, one line naming it and the command to continue, and an exit code
per signal (128 + its number); under torchrun every rank stops at the same step. Real ember-train
processes, real signals (to the process group where a scheduler or a terminal would signal every
process: the trainer and its DataLoader workers)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ember_training.checkpoint_format import load_checkpoint
from ember_training.config import load_config
from ember_training.train_state import step_checkpoints
from ember_training.trainer import Trainer, stage_dir

from .training_helpers import coco_with_truncated_images, quick_overrides, write_config

WAIT_S = 120  # every wait is bounded: a hung process fails the test instead of blocking the suite
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGUSR1: 138}
TRAIN = [sys.executable, "-m", "ember_training.cli.train"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _config(path: Path, steps: int, **extra) -> Path:
    """Stage 1 on coco only, logged every step, no periodic checkpoint unless asked, 2 loader workers."""
    return write_config(path, {**quick_overrides(steps=steps, batch=4), "stages.alignment.datasets": ["coco"],
                               "data.val_fraction": 0.0, "data.num_workers": 2, "train.checkpoint_every": 1000,
                               "train.log_every": 1, "tracking.codecarbon": False, "tracking.plots": False, **extra})


def _start(cmd: list[str], log_dir: Path) -> subprocess.Popen:
    """`cmd` in a session of its own (so its whole process group can be signalled), SIGINT at its
    default as in a terminal, output to files (nothing blocks on a full pipe)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, stdout=(log_dir / "stdout").open("w"), stderr=(log_dir / "stderr").open("w"),
                            env=ENV, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_until(ready, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no {what} within {WAIT_S} s")
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, log_dir: Path) -> tuple[int, str]:
    """The exit code and stderr once the process ends (at most WAIT_S: then everything is killed)."""
    try:
        rc = proc.wait(WAIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"still running {WAIT_S} s after the signal:\n{(log_dir / 'stderr').read_text()[-3000:]}")
    return rc, (log_dir / "stderr").read_text()


def _logged_steps(sdir: Path) -> int:
    path = sdir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _last_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and "Traceback" not in err, err[-3000:]
    return lines[-1]


def _rows(sdir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(ln).items() if k != "time"}
            for ln in (sdir / "metrics.jsonl").read_text().splitlines()]


def test_sigterm_saves_the_step_in_progress_and_resume_is_exact(synth_dir, tmp_path):
    """A preempted job (SIGTERM to every process of it, as SLURM does) used to die on the spot, keeping
    only the newest periodic checkpoint (none here). Now it ends after the step in progress with a
    checkpoint at that step, exit 143 and the command to continue, which finishes the stage with the
    weights and losses of an uninterrupted run."""
    steps = 60
    cfg = _config(tmp_path / "c.yaml", steps)
    out, logs = tmp_path / "out", tmp_path / "logs"
    sdir = stage_dir(out, 1)
    proc = _start([*TRAIN, "--config", str(cfg), "--stage", "1", "--data-dir", str(synth_dir),
                   "--output-dir", str(out)], logs)
    _wait_until(lambda: _logged_steps(sdir) >= 3, proc, "3 logged steps")
    os.killpg(proc.pid, signal.SIGTERM)
    rc, err = _finish(proc, logs)
    line = _last_line(err)
    assert rc == 143, err[-3000:]
    [ckpt] = step_checkpoints(sdir)
    step = load_checkpoint(ckpt)["step"]
    assert 3 <= step < steps and not (sdir / "final.pt").exists()
    assert _logged_steps(sdir) == step  # the step in progress was finished and logged, none after it
    assert line.startswith("ember-train: interrupted by SIGTERM") and f"step {step}" in line and str(ckpt) in line, line
    assert not list((sdir / "checkpoints").glob(".*.tmp"))

    command = shlex.split(line.split("continue with: ", 1)[1])
    assert command[-1] == "--resume" and command[0] == sys.executable, command
    resumed = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=WAIT_S)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumes at step {step}" in resumed.stderr

    straight = tmp_path / "straight"
    Trainer(load_config(cfg), straight, synth_dir).run([1])
    a, b = (load_checkpoint(stage_dir(d, 1) / "final.pt") for d in (straight, out))
    assert a["step"] == b["step"] == steps
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["data_position"] == b["data_position"]
    assert _rows(stage_dir(straight, 1)) == _rows(sdir)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGUSR1], ids=["SIGINT", "SIGUSR1"])
def test_ctrl_c_and_sigusr1_stop_the_same_way(synth_dir, tmp_path, sig):
    """Ctrl-C (SIGINT to the terminal's process group: the loader workers too) and SLURM's
    `--signal=USR1@120` stop after the step in progress with a checkpoint; exit 130 and 138.
    SIGUSR1 used to kill the run (and its workers) with nothing saved."""
    cfg = _config(tmp_path / "c.yaml", 400)
    out, logs = tmp_path / "out", tmp_path / "logs"
    sdir = stage_dir(out, 1)
    proc = _start([*TRAIN, "--config", str(cfg), "--stage", "1", "--data-dir", str(synth_dir),
                   "--output-dir", str(out)], logs)
    _wait_until(lambda: _logged_steps(sdir) >= 3, proc, "3 logged steps")
    os.killpg(proc.pid, sig)
    rc, err = _finish(proc, logs)
    line = _last_line(err)
    assert rc == EXIT[sig], err[-3000:]
    [ckpt] = step_checkpoints(sdir)
    step = load_checkpoint(ckpt)["step"]
    assert step >= 3 and _logged_steps(sdir) == step
    assert line.startswith(f"ember-train: interrupted by {sig.name}") and line.endswith("--resume"), line


def test_sigterm_during_data_preparation_ends_promptly(tmp_path):
    """Outside the step loop (here: generating the data) a signal ends the run at once, as Ctrl-C
    does: exit 143, one line, no traceback; the same command with --resume then trains."""
    cfg = _config(tmp_path / "c.yaml", 2)
    out, logs = tmp_path / "out", tmp_path / "logs"
    proc = _start([*TRAIN, "--config", str(cfg), "--stage", "1", "--output-dir", str(out)], logs)
    _wait_until(lambda: "generating synthetic data" in (logs / "stderr").read_text(), proc, "data generation")
    os.killpg(proc.pid, signal.SIGTERM)
    rc, err = _finish(proc, logs)
    line = _last_line(err)
    assert rc == 143, err[-3000:]
    assert line.startswith("ember-train: interrupted by SIGTERM") and line.endswith("--resume"), line
    assert not step_checkpoints(stage_dir(out, 1))
    resumed = subprocess.run(shlex.split(line.split("continue with: ", 1)[1]), capture_output=True, text=True,
                             env=ENV, timeout=WAIT_S)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint(stage_dir(out, 1) / "final.pt")["step"] == 2


SIGNAL_ON_SAVE = textwrap.dedent("""
    # ember-train, sending itself signals while it writes given checkpoint files (torch.save is running)
    import os, signal, sys
    from pathlib import Path
    import torch
    from ember_training import checkpoint_format
    from ember_training.cli.train import main

    plan = {name: getattr(signal, sig) for name, sig in (item.split(":") for item in sys.argv[1].split(","))}
    writing = {}
    real_atomic, real_save = checkpoint_format.atomic_torch_save, torch.save

    def atomic(obj, path):
        writing["name"] = Path(path).name
        return real_atomic(obj, path)

    def save(obj, fh, *args, **kwargs):
        sig = plan.pop(writing.get("name"), None)
        if sig is not None:
            os.kill(os.getpid(), sig)  # its handler runs inside the write below
        return real_save(obj, fh, *args, **kwargs)

    checkpoint_format.atomic_torch_save, torch.save = atomic, save
    raise SystemExit(main(sys.argv[2:]))
""")


@pytest.mark.parametrize("case", ["final", "second_sigterm", "second_ctrl_c"])
def test_signals_while_checkpoints_are_written(synth_dir, tmp_path, case):
    """final: SIGTERM while final.pt is written: the write completes, then the run stops (exit 143) and
    --resume finds the stage complete (it used to leave no final.pt: the stage's steps redone).
    second_sigterm: SIGTERM during the periodic save at step 2 stops the run after step 3; a second
    SIGTERM while step 3's checkpoint is written does not cut it short.
    second_ctrl_c: the same with SIGINT: a second Ctrl-C aborts at once (exit 130), the half-written
    file is removed and step 2's checkpoint stands."""
    plan, steps = {"final": ("final.pt:SIGTERM", 4), "second_sigterm": ("step_000002.pt:SIGTERM,step_000003.pt:SIGTERM", 6),
                   "second_ctrl_c": ("step_000002.pt:SIGINT,step_000003.pt:SIGINT", 6)}[case]
    cfg = _config(tmp_path / "c.yaml", steps, **{"train.checkpoint_every": 2, "train.keep_checkpoints": 5})
    out, logs = tmp_path / "out", tmp_path / "logs"
    sdir = stage_dir(out, 1)
    args = ["--config", str(cfg), "--stage", "1", "--data-dir", str(synth_dir), "--output-dir", str(out)]
    rc, err = _finish(_start([sys.executable, "-c", SIGNAL_ON_SAVE, plan, *args], logs), logs)
    line = _last_line(err)
    assert not list((sdir / "checkpoints").glob(".*.tmp")) and not list(sdir.glob(".*.tmp"))
    kept = [load_checkpoint(p)["step"] for p in step_checkpoints(sdir)]
    if case == "final":
        assert rc == 143 and line.startswith("ember-train: interrupted by SIGTERM"), err[-3000:]
        assert load_checkpoint(sdir / "final.pt")["step"] == steps and kept == [2]
        again = subprocess.run([*TRAIN, *args, "--resume"], capture_output=True, text=True, env=ENV, timeout=WAIT_S)
        assert again.returncode == 0 and "already complete" in again.stderr, again.stderr[-3000:]
    elif case == "second_sigterm":
        assert rc == 143 and line.startswith("ember-train: interrupted by SIGTERM after step 3"), err[-3000:]
        assert kept == [2, 3] and not (sdir / "final.pt").exists()
    else:
        assert rc == 130 and line.startswith("ember-train: interrupted by SIGINT"), err[-3000:]
        assert kept == [2] and not (sdir / "final.pt").exists()
    assert line.endswith("--resume"), line


SIGNAL_ON_EVAL = textwrap.dedent("""
    # ember-train, sending itself SIGTERM when the held-out evaluation of stage 3 starts
    import os, signal, sys
    from ember_training import trainer
    from ember_training.cli.train import main

    real = trainer.Trainer._evaluate

    def evaluate(self, run):
        if run.name == "incidents":
            os.kill(os.getpid(), signal.SIGTERM)  # a preemption notice, now: its handler runs here
        return real(self, run)

    trainer.Trainer._evaluate = evaluate
    raise SystemExit(main(sys.argv[1:]))
""")


def test_sigterm_during_the_held_out_evaluation_keeps_every_step(synth_dir, tmp_path):
    """The evaluation after stages 3 and 4 runs outside the step loop, so a signal there ends the run
    at once. It used to cost every step since the last periodic checkpoint (up to
    `checkpoint_every`, 1000 in small.yaml; here the whole stage). Now the stage's last step is
    checkpointed before the evaluation: --resume does no step again, only the evaluation."""
    steps = 3
    cfg = _config(tmp_path / "c.yaml", steps, **{"data.val_fraction": 0.25})
    out, logs = tmp_path / "out", tmp_path / "logs"
    sdir = stage_dir(out, 3)
    args = ["--config", str(cfg), "--stage", "all", "--data-dir", str(synth_dir), "--output-dir", str(out)]
    rc, err = _finish(_start([sys.executable, "-c", SIGNAL_ON_EVAL, *args], logs), logs)
    line = _last_line(err)
    assert rc == 143 and line.startswith("ember-train: interrupted by SIGTERM outside the training steps"), err[-3000:]
    assert not (sdir / "final.pt").exists() and not stage_dir(out, 4).exists()
    [ckpt] = step_checkpoints(sdir)
    before_eval = load_checkpoint(ckpt)
    assert before_eval["step"] == steps
    resumed = subprocess.run([*TRAIN, *args, "--resume"], capture_output=True, text=True, env=ENV, timeout=WAIT_S)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumes at step {steps}" in resumed.stderr
    final = load_checkpoint(sdir / "final.pt")
    assert final["step"] == steps and (sdir / "eval.json").is_file()
    assert all(torch.equal(final["model"][k], before_eval["model"][k]) for k in final["model"])  # no step again
    assert [r["step"] for r in _rows(sdir)] == list(range(1, steps + 1))
    assert load_checkpoint(stage_dir(out, 4) / "final.pt")["step"] == steps


def test_ddp_sigterm_to_torchrun_stops_every_rank_at_one_step(synth_dir, tmp_path):
    """SIGTERM to the torchrun agent (Kubernetes signals the container's main process): the agent
    forwards it to each rank at its own moment; the ranks agree on one step (an all-reduce of the
    stop flag after every step), each saves that step's checkpoint collectively and exits 143, and
    nothing hangs. The ranks used to die where they stood, with nothing saved."""
    cfg = _config(tmp_path / "c.yaml", 1000, **{"data.num_workers": 1})
    out, logs = tmp_path / "out", tmp_path / "logs"
    sdir = stage_dir(out, 1)
    proc = _start([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   *TRAIN[1:], "--config", str(cfg), "--stage", "1", "--data-dir", str(synth_dir),
                   "--output-dir", str(out)], logs)
    _wait_until(lambda: _logged_steps(sdir) >= 3, proc, "3 logged steps")
    proc.send_signal(signal.SIGTERM)
    rc, err = _finish(proc, logs)
    [ckpt] = step_checkpoints(sdir)
    saved = load_checkpoint(ckpt)
    step = saved["step"]
    assert len(saved["rng"]) == 2 and step >= 3 and _logged_steps(sdir) == step
    stops = re.findall(r"rank (\d): SIGTERM: stopping after step (\d+)", err)
    assert sorted(stops) == [("0", str(step)), ("1", str(step))], err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("ember-train:")]
    assert len(lines) == 1 and lines[0].startswith(f"ember-train: interrupted by SIGTERM after step {step}"), err[-3000:]
    assert lines[0].endswith("--resume") and "torch.distributed.run" in lines[0], lines[0]
    assert rc != 0  # torchrun itself ends with its own SignalException (exit 1): docs/TRAINING.md


def test_a_failed_run_leaves_no_loader_worker_behind(synth_dir, tmp_path):
    """A worker's error ends the run (ember-train's main returns 1) while the loader's iterator is
    still referenced by the error's traceback: its workers must be stopped anyway. A worker left
    alive ignoring SIGTERM made multiprocessing's exit handler (terminate, then join) wait for ever:
    the test suite itself hung at exit in CI."""
    import gc
    import multiprocessing

    from ember_training.cli.train import main as train_main

    data = coco_with_truncated_images(synth_dir, tmp_path / "data")
    before = {p.pid for p in multiprocessing.active_children()}
    cfg = _config(tmp_path / "c.yaml", 4, **{"data.num_workers": 2})
    assert train_main(["--config", str(cfg), "--stage", "1", "--data-dir", str(data),
                       "--output-dir", str(tmp_path / "out")]) == 1
    left = [p for p in multiprocessing.active_children() if p.pid not in before]
    gc.collect()  # frees a leaked iterator (its workers stop), so a failure here does not hang the suite
    assert not left, f"{len(left)} loader worker(s) still running after ember-train returned"


WORKER = textwrap.dedent("""
    # a process set up like a loader worker: answers each line on stdin until it ends
    import sys
    from ember_training.stop_signals import ignore_stop_signals
    ignore_stop_signals()
    print("READY", flush=True)
    for line in sys.stdin:
        print("ALIVE", flush=True)
""")


def test_loader_workers_ignore_a_signal_to_the_job_but_not_their_trainers_terminate():
    """A loader worker ignores SIGTERM from anyone else (a scheduler or a terminal signalling the
    whole job), but ends on its own trainer's SIGTERM (the loader's terminate() of a worker that
    did not stop, multiprocessing's at exit), which it used to ignore as well."""
    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "READY"
        for sig in ("TERM", "INT", "USR1"):  # from another process: `kill`, as slurmstepd or a terminal would
            subprocess.run(["kill", f"-{sig}", str(worker.pid)], check=True)
            worker.stdin.write("ping\n")
            worker.stdin.flush()
            assert worker.stdout.readline().strip() == "ALIVE", sig
        worker.terminate()  # from its parent
        assert worker.wait(timeout=WAIT_S) != 0
    finally:
        worker.kill()
        worker.wait()
