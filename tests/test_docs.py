"""The documentation site builds with warnings as errors, and every code sample in docs/ runs.

Conventions (docs/index.md): every fenced ``python`` block of a page runs, in order, in one
namespace per page, in a temporary working directory; a ``bash`` block runs only when the line
before its fence is ``<!-- test -->``; a block of either kind preceded by ``<!-- skip-test -->``
is shown but never run.
"""

from __future__ import annotations

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
