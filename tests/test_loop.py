"""The training loop on a toy task (no dataset needed): publishing is part of finishing, checkpoints of another
device are refused in one line, no checkpoint holds non-finite weights, and device auto on a CPU says so."""

import json
import logging

import pytest
import torch

from musicdecomp.errors import UserError
from musicdecomp.train import loop
from musicdecomp.train.loop import run_training


def toy_run(run_dir, steps=6, nan_at=None, width=4, tracking=None, stop_after=None, device_auto=False,
            **train):
    """A linear regression trained by ``run_training``; returns (summary, calls), where calls counts the batches
    drawn (the training steps made). With ``nan_at``, the loss is NaN from that (1-based) training step on."""
    torch.manual_seed(0)
    model = torch.nn.Linear(width, 1)
    x = torch.randn(16, width, generator=torch.Generator().manual_seed(1))
    y = x.sum(-1, keepdim=True)
    cfg = {"run_name": "toy/run", "seed": 0}
    tc = {"lr": 1e-2, "warmup_steps": 0, "cosine_steps": None, "grad_clip": 1.0, "amp": "none", "log_every": 1,
          "eval_every": 2, "checkpoint_every": 2, "checkpoint_minutes": 60, "steps": steps, **train}
    cfg["train"] = tc
    calls = {"steps": 0}

    def sample(gen):
        calls["steps"] += 1
        return torch.randint(len(x), (4,), generator=gen)

    def loss(idx, gen):
        value = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        if nan_at is not None and calls["steps"] >= nan_at:
            value = value * float("nan")
        return value, {}

    def validate():  # a finite score even for NaN weights, as an accuracy or an IoU is
        return {"score": -torch.nan_to_num(torch.nn.functional.mse_loss(model(x), y), nan=1e9).item()}

    summary = run_training(cfg, tc, run_dir, model, torch.device("cpu"), sample, loss, validate, tracking,
                           stop_after=stop_after, data_id="toy", device_auto=device_auto)
    return summary, calls


def test_a_finished_run_whose_publishing_failed_is_published_by_the_next_call(tmp_path, monkeypatch):
    """Finished means published: the call after a failed publication publishes the trained run (no step trained,
    nothing set aside, the same MLflow run finished); only a published run is trained again."""
    import mlflow

    tracking = {"mlflow_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "toy"}
    real_plot = loop.plot_curves

    def broken_plot(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(loop, "plot_curves", broken_plot)
    with pytest.raises(OSError, match="disk full"):
        toy_run(tmp_path / "r", tracking=tracking)
    assert torch.load(tmp_path / "r/ckpt/last.pt", weights_only=True)["step"] == 6
    assert not (tmp_path / "r/train.json").exists()
    metrics = (tmp_path / "r/metrics.jsonl").read_text()
    (tmp_path / "r/best.pt").unlink(missing_ok=True)  # as a workflow manager deletes a failed job's outputs

    monkeypatch.setattr(loop, "plot_curves", real_plot)
    summary, calls = toy_run(tmp_path / "r", tracking=tracking)
    assert calls["steps"] == 0 and summary["steps"] == 6  # published, not trained again
    assert not (tmp_path / "r/stale").exists()
    assert (tmp_path / "r/metrics.jsonl").read_text() == metrics
    assert json.loads((tmp_path / "r/train.json").read_text()) == summary
    assert summary["steps_per_second"] > 0  # the training call's record, not this call's
    for name in ("best.pt", "curves.png"):
        assert (tmp_path / "r" / name).stat().st_size > 0
    mlflow.set_tracking_uri(tracking["mlflow_uri"])
    runs = mlflow.search_runs(experiment_names=["toy/musicslots"])
    assert len(runs) == 1 and runs.iloc[0]["run_id"] == summary["mlflow_run_id"]
    assert runs.iloc[0]["status"] == "FINISHED"
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(summary["mlflow_run_id"])}
    assert {"best.pt", "curves.png"} <= artifacts

    # the copy of best.pt failing is the same
    def broken_copy(src, dst):
        raise OSError("no space left")

    monkeypatch.setattr(loop, "copy_file", broken_copy)
    with pytest.raises(OSError, match="no space left"):
        toy_run(tmp_path / "c")
    monkeypatch.undo()
    assert toy_run(tmp_path / "c")[1]["steps"] == 0 and not (tmp_path / "c/stale").exists()

    # a published run called again trains again from step 0 (its state set aside), as before
    again, calls = toy_run(tmp_path / "r")
    assert calls["steps"] == 6 and again["mlflow_run_id"] is None
    assert len(list((tmp_path / "r/stale").iterdir())) == 1


def test_an_unfinished_checkpoint_still_resumes_and_trains_the_rest(tmp_path):
    assert toy_run(tmp_path / "r", stop_after=4)[0] == {"stopped_at": 4}
    summary, calls = toy_run(tmp_path / "r")
    assert calls["steps"] == 2 and summary["steps"] == 6 and not (tmp_path / "r/stale").exists()


@pytest.mark.parametrize("recorded", [True, False], ids=["device recorded", "older checkpoint"])
def test_a_checkpoint_of_another_device_is_refused_in_one_line(tmp_path, recorded):
    """A CUDA checkpoint resumed on the CPU: its random streams (CUDA Philox states) cannot continue on the CPU's
    generator, so the resume is refused with the file and the fix, nothing moved aside."""
    assert toy_run(tmp_path / "r", stop_after=2)[0] == {"stopped_at": 2}
    path = tmp_path / "r/ckpt/last.pt"
    state = torch.load(path, weights_only=True)
    cuda_state = torch.tensor([0] * 8 + [4, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)  # seed and offset: 16 bytes
    state = {**state, "data_gen": cuda_state, "noise_gen": cuda_state.clone()}
    if recorded:
        state["device"] = "cuda"
    else:
        state.pop("device", None)
    torch.save(state, path)
    with pytest.raises(UserError) as err:
        toy_run(tmp_path / "r")
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "cpu" in msg
    assert "cuda" in msg and "delete" in msg
    assert not (tmp_path / "r/stale").exists() and torch.load(path, weights_only=True)["step"] == 2


def test_no_checkpoint_holds_non_finite_weights(tmp_path):
    """Weights that turn NaN between two logging steps (here: time-based checkpoints at every step, loss logged
    every 100) are caught before the next checkpoint is saved: the run fails with "training diverged", and the
    last checkpoint is the last finite one."""
    with pytest.raises(UserError, match=r"^toy/run: training diverged by step 3 .*lower the learning rate"):
        toy_run(tmp_path / "r", steps=8, nan_at=3, log_every=100, eval_every=100, checkpoint_every=100,
                checkpoint_minutes=0)
    state = torch.load(tmp_path / "r/ckpt/last.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
    # the best model is checked the same way: the first validation comes after the weights turned NaN, with a
    # finite score (as an accuracy or an IoU of NaN outputs is), and is not saved
    with pytest.raises(UserError, match="training diverged by step 3"):
        toy_run(tmp_path / "b", steps=8, nan_at=3, log_every=100, eval_every=3, checkpoint_every=100)
    assert not (tmp_path / "b/ckpt/best.pt").exists()


def test_device_auto_on_a_cpu_says_so_for_a_gpu_sized_run(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(loop, "GPU_SIZED", 500)  # parameter-steps: the toy model (width 99: 100 parameters) x steps
    with caplog.at_level(logging.WARNING, logger="musicdecomp"):
        toy_run(tmp_path / "small", steps=4, width=99, device_auto=True)  # 400 < 500
        toy_run(tmp_path / "asked", steps=6, width=99)  # --device cpu asked for: nothing to say
    assert "no GPU" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="musicdecomp"):
        toy_run(tmp_path / "big", steps=6, width=99, device_auto=True)
    (line,) = [r.getMessage() for r in caplog.records if "no GPU" in r.getMessage()]
    assert line.startswith("toy/run:") and "will train on the CPU" in line and "6 steps" in line
    assert "\n" not in line
