"""The Snakemake profiles name real rules (a typo in set-resources would silently leave a job with the defaults)."""

import re

import pytest
import yaml
from conftest import REPO

RULES = {m for f in (REPO / "workflow/rules").glob("*.smk") for m in re.findall(r"^rule (\w+):", f.read_text(), re.M)}


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_profile_names_existing_rules(profile):
    cfg = yaml.safe_load((REPO / f"workflow/profiles/{profile}/profile.yaml").read_text())
    named = set(cfg.get("set-threads", {})) | set(cfg.get("set-resources", {}))
    assert named and named <= RULES, named - RULES


def test_slurm_training_jobs_have_room_to_stop_and_are_retried():
    cfg = yaml.safe_load((REPO / "workflow/profiles/slurm/profile.yaml").read_text())
    assert cfg["retries"] >= 2  # a job stopped before its walltime (exit 75) is continued by its retry
    for rule in ("train_musicslots", "train_baseline", "codec"):
        assert cfg["set-resources"][rule]["runtime"] > 5  # the training stops 5 minutes before the end


def test_slurm_jobs_ask_for_their_threads_as_cpus():
    """A cpus_per_task default would override every rule's threads in the SLURM plugin (tests/test_slurm.py sees
    the CPUs a training job gets on a real cluster; this is the check that needs no SLURM)."""
    cfg = yaml.safe_load((REPO / "workflow/profiles/slurm/profile.yaml").read_text())
    assert "cpus_per_task" not in cfg.get("default-resources", {})
