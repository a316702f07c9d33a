"""The package as users get it: ``python -m selfref_ghn`` is the ``selfref-ghn`` command, and
the built wheel (sdist, then wheel from the sdist) holds every module it needs to run outside
the repository (docs/install.md)."""

import csv
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(JAX_PLATFORMS="cpu", **extra)
    return env


def _run(argv: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=_env(**extra), capture_output=True, text=True)


def test_python_m_is_the_command(tmp_path, capsys):
    """Same output, same message and exit status, as the command's own ``main``."""
    from selfref_ghn.tools import cli

    for args, status in ((["presets"], 0), (["run", "quick", "--set", "population_size=0"], 2)):
        as_module = _run([sys.executable, "-m", "selfref_ghn", *args], tmp_path)
        assert cli.main(args) == as_module.returncode == status
        assert capsys.readouterr() == (as_module.stdout, as_module.stderr)
    assert "'population_size' = 0" in as_module.stderr


def _package_files(root: Path) -> set[str]:
    """The repository's modules by their installed names (envs/ ships as selfref_ghn/envs)."""
    files = {f"selfref_ghn/{p.relative_to(root / 'selfref_ghn')}" for p in
             (root / "selfref_ghn").rglob("*.py")}  # fmt: skip
    files |= {f"selfref_ghn/envs/{p.relative_to(root / 'envs')}" for p in
              (root / "envs").rglob("*.py")}  # fmt: skip
    return {f for f in files if "__pycache__" not in f}


def _metrics(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if "time" not in k} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_built_wheel_runs_outside_the_repository(tmp_path):
    """Build sdist and wheel, install the wheel in a fresh venv that sees this venv's
    dependencies but not the repository, and run ``quick`` from a folder outside it: the
    metrics equal those of the same run from the repository's own code."""
    dist = tmp_path / "dist"
    built = _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], tmp_path)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = dist.glob("selfref_ghn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert _package_files(ROOT) <= names
    assert not any(n.startswith(("envs/", "tests/")) for n in names)  # no bare top-level envs

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(
        subprocess.run([python, "-c", purelib], capture_output=True, text=True).stdout.strip()
    )
    # the dependencies from this venv, read after the new venv's own site-packages; the .pth
    # files there (this venv's editable install of the repository) are not run
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = [python, "-m", "pip", "install", "--quiet", "--no-deps"]
    installed = _run([*pip, "--ignore-installed", str(wheel)], tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]

    work = tmp_path / "work"
    work.mkdir()
    where = _run(
        [python, "-c",
         "import selfref_ghn.envs, selfref_ghn.tools.cli as c; print(c.__file__)"],
        work,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr[-2000:]
    assert Path(where.stdout.strip()).is_relative_to(site)

    # quick's switch window (20, 40) must fit in the run: one at generation 1 instead
    argv = "run quick --generations 3 --seed 1 --set switch_intervals=[[1,2]]".split()
    off = {"SELFREF_GHN_COMPILE_CACHE": "off"}
    wheel_run = _run([str(venv / "bin" / "selfref-ghn"), *argv, "--out", "w"], work, **off)
    assert wheel_run.returncode == 0, wheel_run.stderr[-2000:]
    repo_run = _run([str(BIN / "selfref-ghn"), *argv, "--out", "r"], work, **off)
    assert repo_run.returncode == 0, repo_run.stderr[-2000:]
    rows = _metrics(work / "w")
    assert rows and rows == _metrics(work / "r")
    assert int(rows[-1]["generation"]) == 2
