"""The SLURM profile on a real one-node SLURM cluster that the test starts and stops (Debian's slurm-wlm and munge,
as root; `.ci/run` installs them). The node declares one GPU (a placeholder device: the training falls back to the
CPU), so the profile's GPU requests are granted as on a real cluster."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "srun", "scancel")
# The job-step plugin drops $SLURM_CONF before its srun, so the jobs need the configuration where SLURM looks by
# default; the test writes it there only on a machine that has none and removes it afterwards.
ETC = Path("/etc/slurm")


def _cannot(reason: str):
    """Skip where SLURM cannot be started here; in CI, where .ci/run installs it, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; under CI this test must run (.ci/run installs slurm-wlm and munge)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(d: Path, host: str, munge_socket: Path) -> str:
    return "\n".join([
        "ClusterName=musicdecomp-test",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        "MpiDefault=none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",  # no sacct: Snakemake asks squeue for the job states
        "MinJobAge=600",  # finished jobs stay visible to squeue and scontrol for the test's checks
        "ReturnToService=2",
        "SlurmdParameters=config_overrides",  # the node below may claim more CPUs and memory than this machine has
        "GresTypes=gpu",
        f"StateSaveLocation={d / 'state'}",
        f"SlurmdSpoolDir={d / 'spool'}",
        f"SlurmctldPidFile={d / 'slurmctld.pid'}",
        f"SlurmdPidFile={d / 'slurmd.pid'}",
        f"SlurmctldLogFile={d / 'slurmctld.log'}",
        f"SlurmdLogFile={d / 'slurmd.log'}",
        "NodeName=node1 NodeAddr=127.0.0.1 CPUs=16 RealMemory=64000 Gres=gpu:1 State=UNKNOWN",
        "PartitionName=debug Nodes=node1 Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    search = f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin{os.pathsep}/sbin"  # daemons live in sbin
    found = {b: shutil.which(b, path=search) for b in DAEMONS + CLIENTS}
    missing = [b for b, path in found.items() if path is None]
    if missing:
        _cannot(f"{', '.join(missing)} not found: apt-get install --no-install-recommends slurm-wlm munge")
    if os.geteuid() != 0:
        _cannot("starting a local SLURM cluster needs root")
    if any(p.exists() for p in (ETC / "slurm.conf", ETC / "gres.conf", Path("/run/slurm/conf"))) or any(
            k in os.environ for k in ("SLURM_CONF", "SLURM_JOB_ID")):
        _cannot("this machine belongs to a SLURM cluster (a configuration in /etc/slurm or /run/slurm/conf, or "
                "$SLURM_CONF or $SLURM_JOB_ID set), which the test leaves alone")

    d = tmp_path_factory.mktemp("slurm")
    (d / "state").mkdir()
    (d / "spool").mkdir()
    key = d / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    munge_socket = d / "munge.socket"
    host = socket.gethostname().split(".")[0]
    written = [ETC / "slurm.conf", ETC / "gres.conf"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}

    def start(cmd: list[str]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")

    try:
        ETC.mkdir(exist_ok=True)
        written[0].write_text(_slurm_conf(d, host, munge_socket))
        written[1].write_text("Name=gpu File=/dev/null\n")  # a placeholder device: SLURM only counts it
        start([found["munged"], "--force", f"--socket={munge_socket}", f"--key-file={key}",
               f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}", f"--seed-file={d / 'munged.seed'}"])
        start([found["slurmctld"]])
        start([found["slurmd"], "-N", "node1"])
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = subprocess.run([found["sinfo"], "--noheader", "--format", "%t"], env=env, capture_output=True,
                                   text=True).stdout.strip()
            if state == "idle":
                break
            time.sleep(1)
        else:
            logs = "\n".join(p.read_text()[-1500:] for p in (d / "slurmctld.log", d / "slurmd.log") if p.exists())
            pytest.fail(f"the local SLURM node did not come up (state {state!r}):\n{logs}")
        yield env  # the environment for SLURM clients
    finally:
        subprocess.run([found["scancel"], "--user", "root"], env=env, capture_output=True)
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = d / f"{name}.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().split()[0]), 15)
                except (ProcessLookupError, ValueError):
                    pass
        time.sleep(1)
        for path in written:
            path.unlink(missing_ok=True)


@pytest.mark.slow
def test_slurm_profile_trains_on_a_gpu_node_and_sets_the_time_limit(slurm_cluster, tiny_override, soundfont,
                                                                     tmp_path):
    """`snakemake --workflow-profile workflow/profiles/slurm` submits every job of a MusicSlots training run
    (data stages, MLflow set-up, training) to SLURM; the training job gets its GPU and as many CPUs as its threads,
    and inside the job the training learns the job's end and plans to stop 5 minutes before it."""
    target = "results/musicslots/jsb_multi/none-t1-imp_true-k7/seed0/train.json"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--workflow-profile", str(REPO / "workflow/profiles/slurm"),
           "--slurm-status-command", "squeue",  # this cluster has no accounting database for sacct
           "--slurm-init-seconds-before-status-checks", "1",
           target, "--configfile", str(REPO / "config/tiny.yaml"), str(tiny_override)]
    proc = run(cmd, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    submitted = {rule: job for job, rule in re.findall(r"with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", out)}
    assert {"fetch_jsb", "chords", "render", "features", "mlflow_init", "train_musicslots"} <= set(submitted), out
    assert len(set(submitted.values())) == len(submitted)  # every job was a SLURM job of its own

    record = subprocess.run(["scontrol", "show", "job", submitted["train_musicslots"]], env=slurm_cluster,
                            capture_output=True, text=True, check=True).stdout
    assert "JobState=COMPLETED" in record, record
    assert "TresPerJob=gres:gpu:1" in record, record  # the rule's GPU
    assert "CPUs/Task=2" in record  # its 2 threads as CPUs
    assert "TimeLimit=02:00:00" in record  # the profile's runtime for training jobs

    train = json.loads((tmp_path / target).read_text())
    assert train["steps"] == 4
    log = (tmp_path / "logs/musicslots/jsb_multi/none-t1-imp_true-k7/seed0/train.log").read_text()
    m = re.search(r"SLURM job ends in ([\d.]+) min \((squeue|SLURM_JOB_END_TIME)\): training stops at a checkpoint "
                  r"after ([\d.]+) min", log)
    assert m, log
    ends, stops = float(m.group(1)), float(m.group(3))
    assert 110 < ends <= 120 and stops == pytest.approx(ends - 5, abs=0.15)
    assert "train-musicslots done in" in log
