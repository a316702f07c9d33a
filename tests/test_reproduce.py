"""``experiments/reproduce.py --scale smoke`` runs and writes its figures and tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "experiments" / "reproduce.py"


def _reproduce(
    out: Path, only: str, timeout: int, methods: str | None = None
) -> subprocess.CompletedProcess:
    extra = ["--methods", methods] if methods else []
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--scale", "smoke", "--only", only, "--out", str(out)]
        + extra,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_presets_cover_the_paper():
    sys.path.insert(0, str(ROOT))
    from experiments.presets import EXPERIMENTS, METHODS, SCALES

    assert set(EXPERIMENTS) == {"cartpole", "lunarlander", "ant"}
    assert set(METHODS) == {
        "srghn", "open_es", "cma_es", "simple_ga", "gesmr_ga", "samr_ga",
        "fixed_rate", "frozen_head", "external",
    }  # fmt: skip
    for exp in EXPERIMENTS.values():
        assert set(exp.seeds) == set(SCALES)
        for scale in SCALES:  # every scale's config passes validation (no compile)
            config = exp.config(scale)
            assert config.generations > 0 and config.population_size > 0, (exp.name, scale)
    # the Ant cpu scale runs brax's fastest CPU backend
    assert dict(EXPERIMENTS["ant"].config("cpu").env_kwargs) == {"backend": "spring"}
    smoke = EXPERIMENTS["cartpole"].config("smoke")
    assert smoke.population_size <= 8 and smoke.switch_intervals


def _check_smoke(out: Path, methods: tuple[str, ...]) -> None:
    exp = out / "cartpole"
    for name in ("returns.png", "rates.png", "diversity.png", "recovery.md", "recovery.csv"):
        assert (exp / name).stat().st_size > 0, name
    for method in methods:
        assert (exp / method / "seed0" / "config.json").exists(), method
    report = (out / "REPORT.md").read_text()
    assert "git " in report and "recovery" in report.lower()
    table = (exp / "recovery.md").read_text()
    for method in methods:
        assert f"| {method} |" in table, method


@pytest.mark.slow  # 15-25 s on a 2-core CPU: `make test-all`
def test_smoke_cartpole(tmp_path):
    """SR-GHN, one baseline and one ablation: every figure and table of the report."""
    methods = ("srghn", "simple_ga", "fixed_rate")
    res = _reproduce(tmp_path / "repro", "cartpole", timeout=900, methods=",".join(methods))
    assert res.returncode == 0, res.stdout + res.stderr
    _check_smoke(tmp_path / "repro", methods)


@pytest.mark.slow
def test_smoke_cartpole_all_methods(tmp_path):
    res = _reproduce(tmp_path / "repro", "cartpole", timeout=1800)
    assert res.returncode == 0, res.stdout + res.stderr
    _check_smoke(
        tmp_path / "repro",
        ("srghn", "open_es", "cma_es", "simple_ga", "gesmr_ga", "samr_ga",
         "fixed_rate", "frozen_head", "external"),
    )  # fmt: skip


def test_unknown_experiment_is_refused(tmp_path):
    res = _reproduce(tmp_path, "pong", timeout=120)
    assert res.returncode == 2 and "unknown experiment" in res.stderr


@pytest.mark.slow
def test_smoke_all_experiments(tmp_path):
    out = tmp_path / "repro"
    res = _reproduce(out, "cartpole,lunarlander,ant", timeout=3600)
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("cartpole", "lunarlander", "ant"):
        assert (out / name / "returns.png").exists() or "skipped" in res.stdout, name
