"""The front door: pins agree between requirements.txt and environment.yml, the README's commands, CI."""

import re
import subprocess

import yaml
from conftest import REPO


def pins(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned requirement: {line}"
            out[name.lower().replace("_", "-")] = version
    return out


def test_environment_yml_pins_equal_requirements():
    req = pins((REPO / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins(pip_section) == req
    assert "python=3.11" in env["dependencies"]
    assert req["torch"] == "2.11.0" and req["torchaudio"] == "2.11.0"  # the lent GPU machines' versions


def test_installed_versions_are_the_pinned_ones():
    from importlib.metadata import version

    for name, pinned in pins((REPO / "requirements.txt").read_text().splitlines()).items():
        assert version(name) == pinned, name


def readme_commands():
    text = (REPO / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_starts_with_the_two_commands():
    run_all, run_tests = readme_commands()[:2]
    assert run_all == "./setup.sh snakemake --cores 8 all"
    assert run_tests == "./setup.sh pytest"
    ci = (REPO / ".ci" / "run").read_text()
    assert run_tests in ci.splitlines()


def test_setup_script_parses():
    assert subprocess.run(["bash", "-n", str(REPO / "setup.sh")]).returncode == 0
    assert (REPO / "setup.sh").stat().st_mode & 0o111
