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
trains again from step 0. The old checkpoint and logs are moved to ``<run>/stale/<time>/`` (nothing is deleted),
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
fixed training shapes once. On CUDA, Adam is the fused implementation.

A time limit (``time_limit``, seconds of this call) ends the call cleanly at a checkpoint, before a scheduler's
wall-clock limit kills it: rerunning continues from there. Until the run has finished there is no ``best.pt``;
``ckpt/best.pt`` (same format) can be evaluated meanwhile. A resumed run selects against the ``ckpt/best.pt`` it
finds (its score and step), so a best checkpoint brought from elsewhere with the last one is not overwritten by a
worse model.

``compact_checkpoint`` stores a copy of ``ckpt/last.pt`` with Adam's moments in bfloat16 (28 MB instead of 42 at
MusicSlots' paper size), for carrying a run between machines under a size limit. Resuming from it casts the moments
back to float32 (``torch.optim.Optimizer.load_state_dict``); the rounding (under 0.4 % of each value) makes the
continuation differ slightly from an uninterrupted run, so the steps where a run resumed from such a copy are
recorded (``compact_resumes`` in the checkpoints, ``progress.json`` and ``train.json``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

from musicdecomp.errors import UserError
from musicdecomp.io import atomic_path, copy_file, load_torch, write_json
from musicdecomp.logs import get_logger
from musicdecomp.train.adopt import adopt_staged
from musicdecomp.train.schedule import learning_rate
from musicdecomp.train.tracking import Tracker, resume_tags

log = get_logger("train")


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {requested!r} was asked for but CUDA is not available; use --device auto or cpu")
    return torch.device(requested)


AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the ``amp`` settings that autocast (on CUDA); "none": off


def autocast(device: torch.device, amp: str):
    """The forward pass's precision: ``amp`` (bf16 or fp16) autocast on CUDA; float32 on CPU and for "none"."""
    if device.type == "cuda" and amp in AMP:
        return torch.autocast("cuda", dtype=AMP[amp])
    return torch.autocast(device.type, enabled=False)


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


SPEED_OPTIONS = ("channels_last", "cudnn_benchmark")


def check_speed(speed: dict | None) -> dict:
    speed = dict(speed or {})
    unknown = set(speed) - set(SPEED_OPTIONS)
    if unknown:
        raise UserError(f"unknown speed options {sorted(unknown)}; known: {', '.join(SPEED_OPTIONS)}")
    return {k: bool(speed.get(k, False)) for k in SPEED_OPTIONS}


def prepare(cfg: dict, data_dir: str | Path, device: str, threads: int | None):
    """Device, CPU threads, the run's seed, and its train/valid splits loaded onto the device."""
    from musicdecomp.data.datasets import load_split

    dev = pick_device(device)
    if threads and dev.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(cfg["seed"])
    return dev, load_split(Path(data_dir) / "train.pt", dev), load_split(Path(data_dir) / "valid.pt", dev)


def load_best(run_dir: str | Path) -> dict:
    """A finished run's ``best.pt`` ({model, config, step, val})."""
    return load_checkpoint(Path(run_dir) / "best.pt", missing="train the run first (an unfinished run's "
                                                             "ckpt/best.pt can be evaluated with --checkpoint)")


def load_checkpoint(path: str | Path, missing: str = "train the run first") -> dict:
    """A best-model file ({model, config, step, val}): ``best.pt`` or an unfinished run's ``ckpt/best.pt``."""
    path = Path(path)
    state = load_torch(path, "a readable checkpoint", missing, "train the run again")
    if not isinstance(state, dict) or not {"model", "config", "step", "val"} <= set(state):
        raise UserError(f"{path} is not a best-model file (model, config, step, val); ckpt/last.pt cannot be "
                        f"evaluated, use ckpt/best.pt")
    return state


def read_best(path: str | Path) -> tuple[float, int]:
    """(validation score, step) of a best-model file (``ckpt/best.pt`` or ``best.pt``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return float(state["val"]["score"]), int(state["step"])


# what a run folder holds of its training (set aside together when a run starts over)
RUN_STATE = ("ckpt", "best.pt", "train.json", "config.json", "metrics.jsonl", "progress.json", "curves.png",
             "test.json", "test.png", "test_audio", "probe", "probe.json", "adopted.json")


def _not_resumable(state: dict, cfg: dict, steps: int, data_id: str | None) -> str:
    """Why a checkpoint must not be continued ('' if it may)."""
    if state["config"] != cfg:
        keys = sorted(differing_keys(state["config"], cfg))
        return f"it was made with another configuration ({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''})"
    if data_id is not None and state.get("data_id") is not None and state["data_id"] != data_id:
        return (f"it was trained on other data (data {state['data_id']}, now {data_id}: the dataset was rebuilt from "
                f"other chords, notes or parameters)")
    if state["step"] >= steps:
        return "its run had finished, so this call trains it again"
    return ""


COMPACT = "bfloat16 optimizer moments"


def compact_checkpoint(src: str | Path, dst: str | Path) -> dict:
    """Write ``src`` (a ``ckpt/last.pt``) to ``dst`` with the optimiser's floating-point state (Adam's moments, not
    its step counts) in bfloat16; weights, random streams and the rest are unchanged. Returns {bytes_before,
    bytes_after}. See the module docstring."""
    src, dst = Path(src), Path(dst)
    before = src.stat().st_size if src.exists() else 0
    state = load_torch(src, "a readable checkpoint", "train the run first", "train the run again")
    if not isinstance(state, dict) or "optimizer" not in state:
        raise UserError(f"{src} is not a training checkpoint (ckpt/last.pt, with the optimiser state)")
    for slot in state["optimizer"]["state"].values():
        for key, value in slot.items():
            if key != "step" and torch.is_tensor(value) and value.is_floating_point():
                slot[key] = value.to(torch.bfloat16)
    state["compact"] = COMPACT
    save(dst, state)
    return {"bytes_before": before, "bytes_after": dst.stat().st_size}


def config_differences(trained: dict, cfg: dict, here: str, most: int = 4) -> str:
    """``key (value in the run, value <here>), ...`` for the first ``most`` keys where two configurations differ."""
    from musicdecomp.config import flatten

    keys, was, now = differing_keys(trained, cfg), flatten(trained), flatten(cfg)
    shown = ", ".join(f"{k} ({was.get(k)!r} in the run, {now.get(k)!r} {here})" for k in keys[:most])
    return shown + (", ..." if len(keys) > most else "")


def differing_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b))
                for k in differing_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def set_aside(run_dir: Path) -> Path:
    """Move the run folder's training state (checkpoints, published results, logs) to ``stale/<time>/``."""
    dest = run_dir / "stale" / time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while dest.exists():
        dest, n = dest.with_name(f"{dest.name.split('.')[0]}.{n}"), n + 1
    dest.mkdir(parents=True)
    for name in RUN_STATE:
        if (run_dir / name).exists():
            (run_dir / name).rename(dest / name)
    return dest


def save(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def run_training(cfg: dict, tc: dict, run_dir: str | Path, model: torch.nn.Module, device: torch.device,
                 sample: Callable[[torch.Generator], object], loss: Callable[[object, torch.Generator], tuple],
                 validate: Callable[[], dict], tracking: dict | None = None, tags: dict | None = None,
                 stop_after: int | None = None, time_limit: float | None = None, speed: dict | None = None,
                 data_id: str | None = None, code: dict[str, str] | None = None) -> dict:
    """Train ``model`` (already on ``device``) for ``tc["steps"]`` steps; see the module docstring.

    ``cfg`` is the run's whole configuration (saved with it; a checkpoint made with another one, or of a finished
    run, is moved aside and training starts over, see the module docstring);
    ``tc`` its training settings (lr, warmup_steps, cosine_steps, grad_clip, amp, log_every, eval_every,
    checkpoint_every, checkpoint_minutes, steps). ``data_id`` names the data the run trains on (the dataset's
    ``source_id``); a checkpoint made on other data is not continued either. ``code`` (file -> hash, see
    ``pipeline.Step.code_id``) is saved with each checkpoint; resuming with other code goes on, on record (see the
    module docstring). ``stop_after`` ends the call after that many steps in all, as if killed right after a
    checkpoint (for tests); ``time_limit`` ends it at the first step after that many seconds of this call, with a
    checkpoint. Either way the call returns ``{"stopped_at": step}``. ``speed``: see the module docstring.
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
    opt = torch.optim.Adam(model.parameters(), lr=tc["lr"], fused=device.type == "cuda")
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
        data_gen.set_state(state["data_gen"])
        noise_gen.set_state(state["noise_gen"])
        torch.set_rng_state(state["torch_rng"])
        step, best, best_step = state["step"], state["best_score"], state["best_step"]
        run_id, elapsed = state.get("mlflow_run_id"), state.get("elapsed", 0.0)
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
    tracker = Tracker(run_dir, tracking, cfg["run_name"], cfg, tags or {}, resume_step=step, mlflow_run_id=run_id)
    write_json(run_dir / "config.json", cfg)
    t_start = t_ckpt = time.perf_counter()
    steps_here = 0
    spent = {"validation": 0.0, "checkpoints": 0.0}  # seconds of this call not spent on training steps

    def sync() -> None:  # so that the time of a phase does not include the training steps queued before it
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    def checkpoint() -> None:
        sync()
        t0 = time.perf_counter()
        wall = t0 - t_start
        save(ckpt_path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "config": cfg,
                         "scaler": update.scaler.state_dict(),
                         "data_gen": data_gen.get_state(), "noise_gen": noise_gen.get_state(),
                         "torch_rng": torch.get_rng_state(), "best_score": best, "best_step": best_step,
                         "mlflow_run_id": tracker.run_id, "elapsed": elapsed + wall, "data_id": data_id,
                         "code": code, "code_changes": code_changes, "compact_resumes": compact_resumes})
        write_json(run_dir / "progress.json", {
            "run_name": cfg["run_name"], "step": step, "steps": tc["steps"], "best_val_score": best,
            "best_step": best_step, "device": device_name, "speed": speed, "wall_seconds": elapsed + wall,
            "steps_this_call": steps_here, "steps_per_second": steps_here / max(wall, 1e-9),
            "seconds_this_call": {"all": wall, **spent}, "code_changes": code_changes,
            "compact_resumes": compact_resumes, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
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
    except BaseException:
        tracker.close("FAILED")
        raise
    if not best_path.exists():
        raise UserError(f"{best_path} is missing although training finished; delete {run_dir} and train again")
    copy_file(best_path, run_dir / "best.pt")
    wall = time.perf_counter() - t_start
    summary = {"run_name": cfg["run_name"], "steps": step, "best_step": best_step, "best_val_score": best,
               "device": device_name, "speed": speed, "wall_seconds": elapsed + wall,
               "steps_per_second": steps_here / max(wall, 1e-9), "seconds_this_call": {"all": wall, **spent},
               "parameters": sum(p.numel() for p in model.parameters()), "mlflow_run_id": tracker.run_id,
               "code_changes": code_changes, "compact_resumes": compact_resumes, "data_id": data_id, "code": code}
    plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png", cfg["run_name"])
    tracker.artifact(run_dir / "curves.png")
    tracker.artifact(run_dir / "best.pt")
    write_json(run_dir / "train.json", summary)
    tracker.close("FINISHED")
    return summary


def plot_curves(metrics_jsonl: Path, out_png: Path, title: str) -> None:
    """Training loss and every validation metric against steps."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line]
    keys = ["train/loss"] + sorted({k for r in rows for k in r if k.startswith("val/") and k != "val/score"})
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="." if len(pts) < 50 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
