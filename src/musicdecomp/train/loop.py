"""One resumable training loop for every model (MusicSlots, baselines, probes).

A task gives the loop three functions: ``sample(generator)`` draws a batch, ``loss(batch, generator)``
returns the loss to minimise (and extra values to log), ``validate()`` returns metrics with a ``score``
(higher is better) that selects the best model. The loop owns the rest: Adam with warm-up x cosine learning
rate, gradient clipping, autocast on CUDA (``amp``: bf16, or fp16 with loss scaling, see ``Update``), logging
(metrics.jsonl and MLflow), the best checkpoint, and resuming: rerunning continues from ``<run>/ckpt/last.pt``
(every ``checkpoint_every`` steps and at least every ``checkpoint_minutes``), restoring weights, optimiser, loss
scale and random streams, so an interrupted run ends bit-identical to an uninterrupted one on the same device.

Only an interrupted run with the same configuration and data (``data_id``) is resumed. If the code it depends on
(``code``: a hash per file) changed meanwhile, it is still resumed, since a requeued job must not lose hours of
training to a fixed typo, but not silently: a warning names the files, and the step is recorded in the
checkpoints, ``progress.json``, ``train.json`` (``code_changes``) and the MLflow run's tags, so a result that mixes
code versions can be told apart (delete ``ckpt/`` to train from scratch instead). A checkpoint of a *finished*
run, or one made with another configuration or on other data, is not: a workflow manager reruns a finished training
job only because something it depends on changed (parameters, data, code) or because it was asked to, so the run
trains again from step 0. Finished means published: the last checkpoint is saved before publishing (``best.pt``,
the curves, MLflow, ``train.json``) and marked ``published`` only after it, so a run whose publishing failed (a
full disk, MLflow unreachable) is published by the next call, without training a step or setting anything aside;
its ``train.json`` keeps the timings of the call that trained it. (Checkpoints from before this mark are taken as
published.) The old checkpoint and logs are moved to ``<run>/stale/<time>/`` (nothing is deleted),
with a warning saying why. (Snakemake's ``--touch`` or DVC's ``dvc commit`` accept an old result instead of
retraining; a finished run trained elsewhere is brought in with ``adopt-run``, see ``musicdecomp.train.adopt``:
staged in ``<run>/adopt/``, it is published by this loop instead of trained.)

Run folder: ``best.pt`` ({model, config, step, val}), ``train.json`` (summary, with the ``data_id`` and the
``code`` hashes the run trained with), ``config.json``,
``metrics.jsonl``, ``curves.png``, ``progress.json`` (step, best, throughput, and where the call's time went:
``seconds_this_call`` {all, validation (with saving the best model), checkpoints}; rewritten at every checkpoint, so
a running or stopped run can be watched); ``ckpt/last.pt`` and ``ckpt/best.pt`` (published as best.pt at the end:
workflow managers delete declared outputs before rerunning a job, ckpt/ survives).

Speed options (``speed``; they change how the work runs on the device, not the result beyond rounding, so a run
may switch them between calls): ``channels_last`` stores the convolution weights (and so their activations) in
NHWC order, the layout of cuDNN's tensor-core kernels; ``cudnn_benchmark`` lets cuDNN time its algorithms for the
fixed training shapes once; ``compile`` compiles the model's forward (and so its backward) in place with
``torch.compile`` (``compile_model``), which fuses the elementwise work between the matrix products into fewer
kernels. Compiling takes time at the first step and again at the first validation batch (another shape); Inductor
caches its kernels on disk (``$TORCHINDUCTOR_CACHE_DIR``), so later calls on the same machine start faster. On
CUDA, Adam is the fused implementation.

A time limit (``time_limit``, seconds of this call) ends the call cleanly at a checkpoint, before a scheduler's
wall-clock limit kills it: rerunning continues from there. Until the run has finished there is no ``best.pt``;
``ckpt/best.pt`` (same format) can be evaluated meanwhile. A resumed run selects against the ``ckpt/best.pt`` it
finds (its score and step), so a best checkpoint brought from elsewhere with the last one is not overwritten by a
worse model.

Checkpoints belong to the kind of device that made them. Weights, optimiser and loss scale load anywhere, but the
random streams of the batches and the slot noise are generators of that device (CUDA: a Philox seed and offset;
CPU: a Mersenne Twister state), and one kind's state cannot continue the other's stream: a CUDA checkpoint resumed
on the CPU (or the reverse) would draw other batches and noise than the run it continues, which neither the run nor
its record would show. So such a resume is refused in one line naming the file and the fix (resume on the device
kind it names, or delete ``ckpt/`` to train from scratch), rather than reseeding silently. Another device of the
same kind (``cuda:1`` after ``cuda:0``) restores them exactly. A rehearsal of a GPU job on the CPU
(``tools/gpu/driver.py dry-run``) sets ``$MUSICDECOMP_RESEED_OTHER_DEVICE=1`` to continue such a checkpoint with
fresh streams instead, with a warning. A finished run that is only published draws nothing
and may be published on any device.

Every checkpoint and best model is checked before it is saved: a NaN or infinite loss or weight (the loss is
otherwise checked at logging steps only, and a time-based checkpoint may fall between two) fails the run with the
one-line "training diverged" error, so no checkpoint holds a diverged model. One host sync per save.

A run that ``device: auto`` (``--device auto``) put on the CPU because no GPU was found says so in one warning before
it trains when it is sized for a GPU: when its remaining steps times its trainable parameters reach ``GPU_SIZED``
(a tiny configuration's runs stay far below it; MusicSlots' paper-size runs are far above). Callers tell the loop
that the device was chosen automatically (``device_auto``); ``--device cpu`` is taken as meant.

``musicdecomp.train.checkpoints.compact_checkpoint`` stores a copy of ``ckpt/last.pt`` with Adam's moments in bfloat16 (28 MB instead of 42 at
MusicSlots' paper size), for carrying a run between machines under a size limit. Resuming from it casts the moments
back to float32 (``torch.optim.Optimizer.load_state_dict``); the rounding (under 0.4 % of each value) makes the
continuation differ slightly from an uninterrupted run, so the steps where a run resumed from such a copy are
recorded (``compact_resumes`` in the checkpoints, ``progress.json`` and ``train.json``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch

from musicdecomp.data.datasets import load_split
from musicdecomp.device import autocast, pick_device
from musicdecomp.errors import UserError
from musicdecomp.io import copy_file, write_json
from musicdecomp.logs import get_logger
from musicdecomp.train.adopt import adopt_staged
from musicdecomp.train.checkpoints import differing_keys, read_best, save, set_aside
from musicdecomp.train.schedule import learning_rate
from musicdecomp.train.tracking import Tracker, plot_curves, resume_tags

log = get_logger("train")


GPU_SIZED = 1e10  # remaining steps x trainable parameters from which a CPU run under device auto is warned about (the
# module docstring): e.g. 3,000 steps of a 3.5 M-parameter model

MIN_LOSS_SCALE = 2.0 ** -14  # 30 halvings below the start (2^16): float16's smallest normal number; below it the
# gradients overflow at nearly every step


class Update:
    """The backward pass, gradient clipping and the optimiser step of one training step.

    Under ``amp: fp16`` the loss is scaled (``torch.amp.GradScaler``: the official MusicSlots code's "16-mixed"),
    so that small gradients do not vanish in float16, and the gradients are unscaled before clipping; a step
    whose gradients overflowed is skipped and the scale halved. The scaler runs on every device, CPU included,
    where the forward pass stays in float32 and scaling by a power of two changes nothing (tested), so its
    bookkeeping and its checkpointed state are exercised everywhere. For bf16 and float32 it is a plain
    backward-clip-step. Fused Adam (CUDA) skips overflowed steps on the device, without a host sync.
    """

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, device: torch.device, amp: str,
                 grad_clip: float | None):
        self.params, self.opt, self.clip = list(model.parameters()), opt, grad_clip or float("inf")
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def __call__(self, loss: torch.Tensor) -> torch.Tensor:
        """Returns the (unscaled) gradient norm before clipping."""
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        return grad_norm

    def log_values(self, run_name: str) -> dict:
        """What to log with the loss (a host sync: call it at logging steps only). Raises when the loss scale has
        collapsed, i.e. the gradients overflow float16 at (nearly) every step, which would otherwise skip every
        update while the run looks alive."""
        if not self.scaler.is_enabled():
            return {}
        scale = self.scaler.get_scale()
        if scale < MIN_LOSS_SCALE:
            raise UserError(f"{run_name}: the fp16 loss scale fell to {scale:.3g}: the gradients overflow float16 at "
                            f"nearly every step, so no update is made; train with amp: bf16 (or none) instead")
        return {"train/loss_scale": scale}


SPEED_OPTIONS = ("channels_last", "cudnn_benchmark", "compile")


def compile_model(model: torch.nn.Module) -> None:
    """Compile ``model``'s forward in place (its state dict keeps its keys). Inductor's layout optimisation is off: it
    predicts channels-last strides for transposed convolutions with output padding that the convolution kernels do
    not return, and the backward pass then fails its stride check (pytorch/pytorch#184026)."""
    model.compile(options={"layout_optimization": False})


def check_speed(speed: dict | None) -> dict:
    speed = dict(speed or {})
    unknown = set(speed) - set(SPEED_OPTIONS)
    if unknown:
        raise UserError(f"unknown speed options {sorted(unknown)}; known: {', '.join(SPEED_OPTIONS)}")
    return {k: bool(speed.get(k, False)) for k in SPEED_OPTIONS}


def prepare(cfg: dict, data_dir: str | Path, device: str, threads: int | None):
    """Device, CPU threads, the run's seed, and its train/valid splits loaded onto the device."""
    dev = pick_device(device)
    if threads and dev.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(cfg["seed"])
    return dev, load_split(Path(data_dir) / "train.pt", dev), load_split(Path(data_dir) / "valid.pt", dev)


def _not_resumable(state: dict, cfg: dict, steps: int, data_id: str | None) -> str:
    """Why a checkpoint must not be continued ('' if it may)."""
    if state["config"] != cfg:
        keys = sorted(differing_keys(state["config"], cfg))
        return f"it was made with another configuration ({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''})"
    if data_id is not None and state.get("data_id") is not None and state["data_id"] != data_id:
        return (f"it was trained on other data (data {state['data_id']}, now {data_id}: the dataset was rebuilt from "
                f"other chords, notes or parameters)")
    if state["step"] >= steps and state.get("published", True):  # unmarked: older checkpoints, published
        return "its run had finished, so this call trains it again"
    return ""


def check_finite(model: torch.nn.Module, loss: torch.Tensor, run_name: str, step: int) -> None:
    """Raise the one-line "training diverged" error if ``loss`` or any weight of ``model`` is NaN or infinite
    (one host sync)."""
    finite = torch.stack([torch.isfinite(loss).all()] + [torch.isfinite(p).all() for p in model.parameters()])
    if not bool(finite.all()):
        what = "loss" if not torch.isfinite(loss).all() else "non-finite weights, loss"
        raise UserError(f"{run_name}: training diverged by step {step} ({what} {loss.item()}); lower the learning "
                        f"rate or check the data")


RESEED_ENV = "MUSICDECOMP_RESEED_OTHER_DEVICE"  # "1": resume another device's checkpoint with fresh random streams


def restore_generators(state: dict, path: Path, device: torch.device, *generators: tuple[str, torch.Generator]):
    """Set each generator to its state in the checkpoint ``state`` (read from ``path``); refuse in one line when the
    checkpoint's random streams come from another kind of device (see the module docstring)."""
    saved_on = state.get("device") or _generator_kind(state[generators[0][0]])  # recorded in newer checkpoints
    fix = f"resume it with --device {saved_on}, or delete {path.parent} to train the run from scratch here"
    if saved_on != device.type and os.environ.get(RESEED_ENV) == "1":  # a rehearsal, not the run: tools/gpu dry-run
        log.warning("%s was saved on %s: its random streams are seeded afresh on %s ($%s), so this continuation "
                    "is not the run's", path, saved_on, device.type, RESEED_ENV)
        return
    if saved_on != device.type:
        raise UserError(f"{path} was saved on {saved_on}: its random streams cannot continue on {device.type}; {fix}")
    try:
        for key, gen in generators:
            gen.set_state(state[key])
    except RuntimeError as e:
        raise UserError(f"{path} holds random streams that do not fit {device.type}'s generator "
                        f"({str(e).splitlines()[0]}); {fix}") from None


def _generator_kind(state: torch.Tensor) -> str:
    """The kind of device whose generator made ``state``: the CPU's (a Mersenne Twister state) or CUDA's (a Philox
    seed and offset)."""
    return "cpu" if state.numel() == torch.Generator().get_state().numel() else "cuda"


def warn_if_gpu_sized(run_name: str, model: torch.nn.Module, steps_left: int, steps: int) -> None:
    """The warning of a GPU-sized run that ``device: auto`` put on the CPU (see the module docstring)."""
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if steps_left * n >= GPU_SIZED:
        log.warning("%s: device auto found no GPU, so it will train on the CPU: %d steps (of %d) of a %d-parameter "
                    "model, a run sized for a GPU; run it where a GPU is, or pass --device cpu to train it here",
                    run_name, steps_left, steps, n)


def run_training(cfg: dict, tc: dict, run_dir: str | Path, model: torch.nn.Module, device: torch.device,
                 sample: Callable[[torch.Generator], object], loss: Callable[[object, torch.Generator], tuple],
                 validate: Callable[[], dict], tracking: dict | None = None, tags: dict | None = None,
                 stop_after: int | None = None, time_limit: float | None = None, speed: dict | None = None,
                 data_id: str | None = None, code: dict[str, str] | None = None,
                 device_auto: bool = False) -> dict:
    """Train ``model`` (already on ``device``) for ``tc["steps"]`` steps; see the module docstring.

    ``cfg`` is the run's whole configuration (saved with it; a checkpoint made with another one, or of a finished
    run, is moved aside and training starts over, see the module docstring);
    ``tc`` its training settings (lr, warmup_steps, cosine_steps (None: constant), grad_clip, amp, log_every,
    eval_every, optional optimizer (adam or adamw; default adam) and weight_decay (default 0),
    checkpoint_every, checkpoint_minutes, steps). ``data_id`` names the data the run trains on (the dataset's
    ``source_id``); a checkpoint made on other data is not continued either. ``code`` (the step's code version and
    module hashes, ``musicdecomp.pipeline.code_id``) is saved with each checkpoint; resuming with other code goes on,
    on record (see the module docstring). ``stop_after`` ends the call after that many steps in all, as if killed right after a
    checkpoint (for tests); ``time_limit`` ends it at the first step after that many seconds of this call, with a
    checkpoint. Either way the call returns ``{"stopped_at": step}``. ``speed``: see the module docstring.
    ``device_auto``: ``device`` was chosen by ``device: auto`` (a GPU-sized run on the CPU is then warned about).
    A finished run whose publishing failed is published without training (see the module docstring).
    """
    run_dir = Path(run_dir)
    speed = check_speed(speed)
    adopted = adopt_staged(run_dir, cfg, model, data_id, code, tracking, tags or {})
    if adopted is not None:  # a finished run trained elsewhere, staged by adopt-run (musicdecomp.train.adopt)
        return adopted
    if speed["channels_last"]:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = speed["cudnn_benchmark"]
    if speed["compile"]:
        compile_model(model)
    optimizer = torch.optim.AdamW if tc.get("optimizer") == "adamw" else torch.optim.Adam
    opt = optimizer(model.parameters(), lr=tc["lr"], weight_decay=tc.get("weight_decay", 0.0),
                    fused=device.type == "cuda")
    update = Update(model, opt, device, tc["amp"], tc["grad_clip"])
    data_gen = torch.Generator(device=device).manual_seed(cfg["seed"])
    noise_gen = torch.Generator(device=device).manual_seed(cfg["seed"] + 1)
    ckpt_path, best_path = run_dir / "ckpt" / "last.pt", run_dir / "ckpt" / "best.pt"
    step, best, best_step, run_id, elapsed = 0, float("-inf"), -1, None, 0.0
    code_changes: list[dict] = []  # [{step, files}]: where a resume found other code
    compact_resumes: list[int] = []  # steps where the run resumed from a compact_checkpoint copy
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.exists() else None
    if state is not None and (reason := _not_resumable(state, cfg, tc["steps"], data_id)):
        moved = set_aside(run_dir)
        log.warning("%s is not resumed: %s. It and the run's logs are moved to %s; %s trains from step 0",
                    ckpt_path, reason, moved, cfg["run_name"])
        state = None
    if state is None and (run_dir / "adopted.json").exists():  # an adopted run (no checkpoint) trained again here
        log.warning("%s holds a run adopted from elsewhere (adopted.json); it is moved to %s and %s trains from step 0",
                    run_dir, set_aside(run_dir), cfg["run_name"])
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):  # fp16's loss scale (absent before it existed, and for other precisions)
            update.scaler.load_state_dict(state["scaler"])
        if state["step"] < tc["steps"]:  # a finished run only to publish draws nothing more
            restore_generators(state, ckpt_path, device, ("data_gen", data_gen), ("noise_gen", noise_gen))
        torch.set_rng_state(state["torch_rng"])
        step, best, best_step = state["step"], state["best_score"], state["best_step"]
        run_id, elapsed = state.get("mlflow_run_id"), state.get("elapsed", 0.0)
        if step >= tc["steps"]:
            log.warning("%s finished training (step %d) but was not published: publishing it now, without training",
                        cfg["run_name"], step)
        else:
            log.info("resumed %s from step %d (best score %.4f at step %d)", cfg["run_name"], step, best, best_step)
        code_changes = list(state.get("code_changes", []))
        if code is not None and state.get("code") is not None and state["code"] != code:
            files = differing_keys(state["code"], code)
            code_changes.append({"step": step, "files": files})
            log.warning("%s continues at step %d with changed code (%s): steps before and after it ran different "
                        "code, which train.json records as code_changes; delete %s to train from scratch instead",
                        cfg["run_name"], step, ", ".join(files), ckpt_path.parent)
        compact_resumes = list(state.get("compact_resumes", []))
        if state.get("compact"):
            compact_resumes.append(step)
            log.info("%s resumes from a compact checkpoint (%s): the continuation differs slightly from an "
                     "uninterrupted run", cfg["run_name"], state["compact"])
        tags = {**(tags or {}), **resume_tags(code_changes, compact_resumes)}
        if best_path.exists():  # the best model on disk is what a later one must beat (it may have come from
            kept = read_best(best_path)  # another machine with last.pt)
            if kept != (best, best_step):
                log.info("model selection continues against %s (step %d, score %.4f)", best_path, kept[1], kept[0])
            best, best_step = kept
        elif best_step >= 0:  # e.g. only ckpt/last.pt was carried to another machine
            log.warning("%s is missing: model selection starts again at the next validation", best_path)
            best, best_step = float("-inf"), -1
    if device_auto and device.type == "cpu":
        warn_if_gpu_sized(cfg["run_name"], model, tc["steps"] - step, tc["steps"])
    tags = {**(tags or {}), **({"musicdecomp.data_id": data_id} if data_id else {}),
            **({"musicdecomp.code_version": str(code["version"])} if code and "version" in code else {})}
    tracker = Tracker(run_dir, tracking, cfg["run_name"], cfg, tags, resume_step=step, mlflow_run_id=run_id)
    write_json(run_dir / "config.json", cfg)
    t_start = t_ckpt = time.perf_counter()
    steps_here = 0
    spent = {"validation": 0.0, "checkpoints": 0.0}  # seconds of this call not spent on training steps

    def sync() -> None:  # so that the time of a phase does not include the training steps queued before it
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    saved = state  # the last checkpoint (marked published once the run is)

    def checkpoint() -> None:
        nonlocal saved
        sync()
        t0 = time.perf_counter()
        wall = t0 - t_start
        check_finite(model, value, cfg["run_name"], step)
        progress = {
            "run_name": cfg["run_name"], "step": step, "steps": tc["steps"], "best_val_score": best,
            "best_step": best_step, "device": device_name, "speed": speed, "wall_seconds": elapsed + wall,
            "steps_this_call": steps_here, "steps_per_second": steps_here / max(wall, 1e-9),
            "seconds_this_call": {"all": wall, **spent}, "code_changes": code_changes,
            "compact_resumes": compact_resumes, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        saved = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "config": cfg,
                 "scaler": update.scaler.state_dict(), "device": device.type,
                 "data_gen": data_gen.get_state(), "noise_gen": noise_gen.get_state(),
                 "torch_rng": torch.get_rng_state(), "best_score": best, "best_step": best_step,
                 "mlflow_run_id": tracker.run_id, "elapsed": elapsed + wall, "data_id": data_id,
                 "code": code, "code_changes": code_changes, "compact_resumes": compact_resumes,
                 "published": False, "progress": progress}
        save(ckpt_path, saved)
        write_json(run_dir / "progress.json", progress)
        spent["checkpoints"] += time.perf_counter() - t0

    model.train()
    try:
        while step < tc["steps"]:
            lr = learning_rate(step, tc["lr"], tc["warmup_steps"], tc["cosine_steps"])
            for group in opt.param_groups:
                group["lr"] = lr
            batch = sample(data_gen)
            with autocast(device, tc["amp"]):
                value, extra = loss(batch, noise_gen)
            grad_norm = update(value)
            step += 1
            steps_here += 1
            if step % tc["log_every"] == 0 or step == tc["steps"]:  # the only host sync of a step (GPU)
                if not torch.isfinite(value):
                    raise UserError(f"{cfg['run_name']}: training diverged by step {step} (loss {value.item()}); "
                                    f"lower the learning rate or check the data")
                tracker.log({"train/loss": value.item(), "train/grad_norm": float(grad_norm), "train/lr": lr,
                             **update.log_values(cfg["run_name"]),
                             **{f"train/{k}": float(v) for k, v in extra.items()}}, step)
            if step % tc["eval_every"] == 0 or step == tc["steps"]:
                sync()
                t_val = time.perf_counter()
                model.eval()
                with torch.no_grad():
                    val = validate()
                model.train()
                tracker.log({f"val/{k}": float(v) for k, v in val.items()}, step)
                if val["score"] > best:
                    check_finite(model, value, cfg["run_name"], step)
                    best, best_step = val["score"], step
                    save(best_path, {"model": model.state_dict(), "config": cfg, "step": step,
                                     "val": {k: float(v) for k, v in val.items()}})
                spent["validation"] += time.perf_counter() - t_val
                log.info("%s step %d loss %.4f val %s (best score %.4f @ %d)", cfg["run_name"], step, value.item(),
                         " ".join(f"{k} {v:.4f}" for k, v in val.items()), best, best_step)
            out_of_time = time_limit is not None and time.perf_counter() - t_start > time_limit
            stopping = step < tc["steps"] and (out_of_time or (stop_after is not None and stop_after <= step))
            if (stopping or step % tc["checkpoint_every"] == 0 or step == tc["steps"]
                    or time.perf_counter() - t_ckpt > 60 * tc["checkpoint_minutes"]):
                checkpoint()
                t_ckpt = time.perf_counter()
            if stopping:
                tracker.close("KILLED")
                if out_of_time:
                    log.info("%s: time limit reached at step %d of %d (%.2f steps/s in this call); rerun the same "
                             "command to continue", cfg["run_name"], step, tc["steps"],
                             steps_here / (time.perf_counter() - t_start))
                return {"stopped_at": step}
        summary = publish(run_dir, cfg, model, tracker, saved, steps_here, t_start, spent,
                          {"device": device_name, "speed": speed, "data_id": data_id, "code": code,
                           "code_changes": code_changes, "compact_resumes": compact_resumes, "best": best,
                           "best_step": best_step, "elapsed": elapsed})
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close("FINISHED")
    # finished means published: a call that finds this mark trains the run again, one that does not publishes it
    save(ckpt_path, {**saved, "published": True, "code": code, "code_changes": code_changes,
                     "compact_resumes": compact_resumes})
    return summary


def publish(run_dir: Path, cfg: dict, model: torch.nn.Module, tracker: Tracker, last: dict, steps_here: int,
            t_start: float, spent: dict, record: dict) -> dict:
    """Publish a finished run: ``best.pt`` (from ``ckpt/best.pt``), ``curves.png``, the MLflow artifacts and
    ``train.json`` (returned). ``last`` is its last checkpoint; a call that trained no step (the run was trained by
    an earlier call whose publishing failed) reports that call's timings, which the checkpoint kept."""
    best_path = run_dir / "ckpt" / "best.pt"
    if not best_path.exists():
        raise UserError(f"{best_path} is missing although training finished; delete {run_dir} and train again")
    copy_file(best_path, run_dir / "best.pt")
    wall = time.perf_counter() - t_start
    timing = {"device": record["device"], "speed": record["speed"], "wall_seconds": record["elapsed"] + wall,
              "steps_per_second": steps_here / max(wall, 1e-9), "seconds_this_call": {"all": wall, **spent}}
    if steps_here == 0 and last.get("progress"):
        timing = {k: last["progress"][k] for k in timing} | {"published_later": time.strftime("%Y-%m-%dT%H:%M:%S")}
    summary = {"run_name": cfg["run_name"], "steps": last["step"], "best_step": record["best_step"],
               "best_val_score": record["best"],
               **timing, "parameters": sum(p.numel() for p in model.parameters()), "mlflow_run_id": tracker.run_id,
               "code_changes": record["code_changes"], "compact_resumes": record["compact_resumes"],
               "data_id": record["data_id"], "code": record["code"]}
    plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png", cfg["run_name"])
    tracker.artifact(run_dir / "curves.png")
    tracker.artifact(run_dir / "best.pt")
    write_json(run_dir / "train.json", summary)
    return summary
