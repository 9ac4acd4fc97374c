"""How long the SLURM job this process runs in has left, so that training can stop at a checkpoint before the
job is killed (see ``cli._time_limit``).

Recent Slurm versions put the job's end in ``$SLURM_JOB_END_TIME``. Slurm 22.05 (Debian 12's) sets it neither in the
batch script nor in its job steps (seen in tests/test_slurm.py), so the job's time left is then asked of ``squeue``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from musicdecomp.logs import get_logger

# squeue's %L: [days-][hours:]minutes:seconds, or a word (NO_LIMIT below when the job has no time limit)
_DURATION = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")
NO_LIMIT = ("UNLIMITED", "NOT_SET", "INFINITE")


def parse_duration(text: str) -> int | None:
    """Seconds in a duration as squeue prints it ("9:59", "1:59:59", "2-00:00:00"); None for anything else."""
    m = _DURATION.match(text.strip())
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def seconds_left() -> tuple[float, str] | None:
    """(seconds until this SLURM job's end, where that came from), or None outside SLURM or without a time limit.
    A failing squeue is logged and treated as no limit: the job then runs until SLURM stops it, and its retry
    continues from the last checkpoint."""
    end = os.environ.get("SLURM_JOB_END_TIME", "")
    if end.isdigit():
        return int(end) - time.time(), "SLURM_JOB_END_TIME"
    job = os.environ.get("SLURM_JOB_ID", "")
    if not job.isdigit():
        return None
    cmd = ["squeue", "--noheader", "--jobs", job, "--format", "%L"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        get_logger().warning("SLURM job %s: cannot ask squeue for its time left (%s); no time limit set", job, e)
        return None
    left = parse_duration(proc.stdout) if proc.returncode == 0 else None
    if left is None and proc.stdout.strip() not in NO_LIMIT:
        get_logger().warning("SLURM job %s: `%s` gave %r (exit %d); no time limit set", job, " ".join(cmd),
                             (proc.stdout or proc.stderr).strip()[:200], proc.returncode)
    return None if left is None else (float(left), "squeue")
