"""The documentation site builds with warnings as errors, and every code sample in docs/ runs.

Conventions (docs/index.md): every fenced ``python`` block of a page runs, in order, in one
namespace per page, in a temporary working directory; a ``bash`` block runs only when the line
before its fence is ``<!-- test -->``; a block of either kind preceded by ``<!-- skip-test -->``
is shown but never run.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
_BLOCK = re.compile(r"(?:^(<!--[^\n]*-->)\n)?^```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)


def code_blocks(page: Path, lang: str) -> list[str]:
    """The blocks of ``lang`` on ``page`` that are to be run, in order."""
    blocks = []
    for marker, block_lang, body in _BLOCK.findall(page.read_text()):
        if block_lang != lang or "skip-test" in marker:
            continue
        if lang == "bash" and "<!-- test -->" not in marker:
            continue
        blocks.append(body)
    return blocks


PAGES = sorted(DOCS.rglob("*.md"))
PY_PAGES = [p for p in PAGES if code_blocks(p, "python")]
SH_PAGES = [p for p in PAGES if code_blocks(p, "bash")]


def _id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict`` succeeds, and every unresolved link points outside docs/."""
    mkdocs = shutil.which("mkdocs", path=str(BIN)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    out = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # links mkdocs could not resolve are reported (INFO); they may only leave docs/
    for page, target in re.findall(
        r"Doc file '([^']+)' contains a link '([^']+)', but the target", out.stderr
    ):
        resolved = (DOCS / page).parent.joinpath(target.split("#")[0]).resolve()
        assert not resolved.is_relative_to(DOCS), f"{page}: broken link to {target}"
        assert resolved.exists(), f"{page}: link to {target}: no such file in the repository"
    assert (tmp_path / "site" / "api" / "evolution" / "index.html").exists()


@pytest.mark.parametrize("page", PY_PAGES, ids=_id)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a real module, so that dataclasses defined on the page can find their module
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in code_blocks(page, "python"):
        # dont_inherit: the page runs without this file's `from __future__ import annotations`
        exec(compile(block, str(page), "exec", dont_inherit=True), module.__dict__)


@pytest.mark.parametrize("page", SH_PAGES, ids=_id)
def test_bash_blocks_run(page, tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for block in code_blocks(page, "bash"):
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert out.returncode == 0, f"{page}:\n{block}\n{out.stdout}\n{out.stderr}"


# --------------------------------------------------------------------------- quoted counts
# Every parameter count quoted in the documentation, with the configuration it is quoted for
# (a preset name, or Config fields) and what it counts: "ghn" (SR-GHN parameters), "policy"
# (the policy network's), "self_nodes" (nodes of the GHN's self graph). "{}" marks the number
# in the quote; whitespace in a quote matches any whitespace (line breaks). Each is checked
# against SRGHN.create, and any "<number> ... parameters" (or "num_params = <number>") of 1,000
# or more in the pages must be one of these, so that a new quote cannot go unchecked.
B = {"env_id": "CartPole-Switch", "population_size": 1024, "horizon": 500}  # workload (b)
QUOTED_COUNTS = [
    ("performance.md", "over its {}-node self graph", B, "self_nodes"),
    ("performance.md", "for all {} parameters", B, "ghn"),
    ("performance.md", "draws {} noise values", B, "ghn"),
    ("performance.md", "(num_params = {} today", B, "ghn"),
    ("quickstart.md", "SR-GHN (self), {} parameters", "quick", "ghn"),
    ("reliability.md", "30 x {} float32 parameters", "cartpole-switch", "ghn"),
    ("results.md", "the policy's {} parameters", "ant", "policy"),
    ("results.md", "times larger ({} parameters", {"policy_hidden": (64, 64)}, "ghn"),
    ("performance.md", "3 actions; {} parameters", "minatar-breakout", "policy"),
    # a policy no registered env fits (the benchmark's synthetic env): (obs, hidden, actions)
    (
        "performance.md",
        "226 to {} policy parameters",
        {"mlp": (67, (512, 256, 128), 21)},
        "policy",
    ),
]
# A number as the pages write it: 15653, 15,653 or 15 653 (plain, no-break or narrow space).
_NUM = r"\d{1,3}(?:[,\u00a0\u202f ]\d{3})+|\d+"
_ANY_COUNT = re.compile(
    rf"(?:{_NUM})(?:\s+[\w-]+){{0,2}}\s+parameters\b|num_params\s*=\s*(?:{_NUM})", re.I
)
COUNT_PAGES = [*PAGES, ROOT / "README.md", ROOT / "benchmarks" / "README.md"]


def _quote_pattern(quote: str) -> re.Pattern:
    before, after = (re.sub(r"\\\s+", r"\\s+", re.escape(part)) for part in quote.split("{}"))
    return re.compile(f"{before}({_NUM}){after}")


def _page(name: str) -> Path:
    return DOCS / name if (DOCS / name).exists() else ROOT / name


@functools.cache
def _counts(config: str | tuple) -> dict[str, int]:
    from selfref_ghn import presets
    from selfref_ghn.config import Config
    from selfref_ghn.evolution.task import make_task
    from selfref_ghn.model.policy import policy_template
    from selfref_ghn.model.srghn import SRGHN

    fields = {} if isinstance(config, str) else dict(config)
    if "mlp" in fields:  # a bare MLP policy of (obs, hidden, actions), no env
        from selfref_ghn.model.policy import MLPPolicy

        obs, hidden, actions = fields.pop("mlp")
        cfg = Config(**fields).validate()
        template = policy_template(MLPPolicy(tuple(hidden), actions), (obs,))
    else:
        cfg = presets.get(config) if isinstance(config, str) else Config(**fields).validate()
        task = make_task(cfg, None, None, None, None)
        template = policy_template(task.policy, task.obs_shape)
    ghn = SRGHN.create(template, cfg)
    return {
        "ghn": ghn.num_params,
        "policy": ghn.policy_graph.num_params,
        "self_nodes": ghn.self_graph.num_nodes,
    }


@pytest.mark.parametrize(
    "page,quote,config,what", QUOTED_COUNTS, ids=[f"{q[0]}:{q[1]}" for q in QUOTED_COUNTS]
)
def test_quoted_counts_match_the_model(page, quote, config, what):
    found = _quote_pattern(quote).findall(_page(page).read_text())
    assert found, f"{page}: {quote!r} is no longer quoted (update QUOTED_COUNTS)"
    key = config if isinstance(config, str) else tuple(sorted(config.items()))
    expected = _counts(key)[what]
    for number in found:
        assert int(re.sub(r"\D", "", number)) == expected, (
            f"{page}: {quote.format(number)!r}, but {config} gives {what} = {expected}"
        )


def test_every_quoted_parameter_count_is_checked():
    """A new "<number> parameters" in the pages must be added to QUOTED_COUNTS."""
    for page in COUNT_PAGES:
        text = page.read_text()
        spans = [
            m.span()
            for page_name, quote, _, _ in QUOTED_COUNTS
            if _page(page_name) == page
            for m in _quote_pattern(quote).finditer(text)
        ]
        for m in _ANY_COUNT.finditer(text):
            digits = re.search(r"\d", m.group(0))
            covered = any(a <= m.start() + digits.start() < b for a, b in spans)
            assert covered or int(re.sub(r"\D", "", m.group(0))) < 1000, (
                f"{page.relative_to(ROOT)}: {m.group(0)!r} is not in QUOTED_COUNTS"
            )
