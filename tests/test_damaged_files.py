"""Damaged files in a results folder (docs/reliability.md, "Damaged files"): a damaged
checkpoint is passed over for the newest intact one, the newest of final_state.npz and the
checkpoints is the one replayed, a damaged metrics.csv is one message naming the file, and
summary.json is strict JSON; and, property-based (hypothesis), random bytes, cuts and JSON
values thrown at every file of a folder and at ``--set``."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.run.checkpoint import DIGEST_FILE, Checkpoints, DamagedCheckpoint
from selfref_ghn.run.folder import load_state, read_summary, save_state, write_summary
from selfref_ghn.run.loop import evolve
from selfref_ghn.run.metrics import read_csv
from selfref_ghn.run.resume import fork
from selfref_ghn.tools import cli, render
from tests.conftest import TINY

CFG = Config(
    **{
        **TINY,
        "env_id": "CartPole-v1",
        "generations": 6,
        "horizon": 20,
        "checkpoint_every": 3,
    }
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run: checkpoints at generations 3 and 6, final_state.npz at 6."""
    out = tmp_path_factory.mktemp("damaged") / "run"
    evolve(CFG, out, progress=False)
    return out


@pytest.fixture
def run(finished_run, tmp_path):
    """A fresh copy of the tiny run for one test to damage."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


@pytest.fixture(scope="module")
def evo():
    return Evolution.create(CFG)


def _largest_data_file(run, step):
    files = [f for f in (run / "checkpoints" / str(step)).rglob("*") if f.is_file()]
    return max(files, key=lambda f: f.stat().st_size)


def _flip(path, at=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _one_line(err):
    lines = [ln for ln in err.splitlines() if ln.startswith("selfref-ghn:")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def test_a_checkpoint_that_differs_from_its_digest_is_damaged_not_silently_read(run, evo):
    """A flipped byte in the array data: orbax itself would read the wrong numbers."""
    _flip(_largest_data_file(run, 6))
    with Checkpoints(run / "checkpoints", read_only=True) as ckpts:
        with pytest.raises(DamagedCheckpoint, match="differs from its digest"):
            ckpts.restore(jax.eval_shape(evo.init), 6)
        (run / "checkpoints" / "6" / "default" / DIGEST_FILE).unlink()
        # without a digest (older checkpoints) orbax's own errors still count: cut a file short
        data = _largest_data_file(run, 6)
        data.write_bytes(data.read_bytes()[:10])
        with pytest.raises(DamagedCheckpoint):
            ckpts.restore(jax.eval_shape(evo.init), 6)
        state, step = ckpts.restore_intact(jax.eval_shape(evo.init))
        assert step == 3 and int(state.generation) == 3


def test_resume_falls_back_to_the_newest_intact_checkpoint(run, capsys):
    """The damaged checkpoint is set aside, the generations after the intact one are played
    again (the same numbers: every draw comes from the state), and metrics.csv written as
    floats by older versions is still read."""
    before = list(csv.DictReader((run / "metrics.csv").open()))
    text = (run / "metrics.csv").read_text()
    rows = [ln.split(",") for ln in text.splitlines()]
    floats = [rows[0]] + [[f"{float(v)}" for v in r] for r in rows[1:]]  # 0 -> 0.0
    (run / "metrics.csv").write_text("\n".join(",".join(r) for r in floats) + "\n")
    _flip(_largest_data_file(run, 6))
    assert cli.main(["run", "--resume", str(run), "--quiet"]) == 0
    line = _one_line(capsys.readouterr().err)
    assert "checkpoint 6 in" in line and "is damaged" in line and "using checkpoint 3" in line
    assert (run / "damaged_checkpoints" / "6").is_dir()
    with Checkpoints(run / "checkpoints", read_only=True) as ckpts:
        assert ckpts.steps() == [3, 6]
        ckpts.verify(6)  # written again
    after = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["generation"] for r in after] == ["0.0", "1.0", "2.0", "3", "4", "5"]
    for a, b in zip(before, after, strict=True):
        for k in ("best_fitness", "mean_fitness", "checksum", "diversity"):
            assert float(a[k]) == float(b[k]), k


def test_render_assess_and_fork_fall_back_and_refuse_when_nothing_is_intact(run, evo, capsys):
    (run / "final_state.npz").unlink()  # a run still going: its checkpoints are its state
    _flip(_largest_data_file(run, 6))
    out = render.render_champion(run, formats=("npz",))
    assert out["state"] == "checkpoints/3" and out["generation"] == 3
    line = _one_line(capsys.readouterr().err)
    assert "checkpoint 6" in line and "using checkpoint 3" in line
    assert cli.main(["assess", str(run), "--episodes", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "checkpoints/3"
    assert cli.main(["assess", str(run), "--episodes", "2", "--checkpoint", "6"]) == 2
    assert "'checkpoint' = 6: an intact checkpoint" in _one_line(capsys.readouterr().err)
    assert fork(run, run.parent / "fork", CFG) == 3
    assert "forking at checkpoint 3" in _one_line(capsys.readouterr().err)
    assert (run.parent / "fork" / "checkpoints" / "3").is_dir()
    assert (
        cli.main(["run", "--fork", str(run), "--fork-at", "6", "--out", str(run.parent / "x")])
        == 2
    )
    assert "'--fork-at' = 6: an intact checkpoint" in _one_line(capsys.readouterr().err)

    _flip(_largest_data_file(run, 3))
    assert cli.main(["render", str(run), "--format", "npz"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "checkpoints 6, 3 in" in err and "are damaged" in err
    assert cli.main(["run", "--resume", str(run), "--quiet"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"'checkpoints' = '{run / 'checkpoints'}': no intact checkpoint" in err


def test_the_newest_state_is_replayed_and_a_bad_final_state_falls_back(run, evo, capsys):
    """final_state.npz older than the latest checkpoint (a run resumed past its first end and
    stopped) is not replayed; one that cannot be used is passed over for the checkpoint."""
    with Checkpoints(run / "checkpoints", read_only=True) as ckpts:
        old = ckpts.restore(jax.eval_shape(evo.init), 3)
    save_state(old, run / "final_state.npz")
    state, source = render.load_run_state(evo, run)
    assert source == "checkpoints/6" and int(state.generation) == 6
    assert capsys.readouterr().err == ""

    arrays = dict(np.load(run / "final_state.npz"))
    arrays["params"] = arrays["params"][:2]  # another run's population size
    np.savez(run / "final_state.npz", **arrays)
    with pytest.raises(Exception, match="entry 'params' is float32\\[2, "):
        load_state(evo, run / "final_state.npz")
    state, source = render.load_run_state(evo, run)
    assert source == "checkpoints/6"
    assert "final_state.npz is unusable: entry 'params'" in _one_line(capsys.readouterr().err)

    shutil.rmtree(run / "checkpoints")
    (run / "final_state.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert cli.main(["assess", str(run), "--episodes", "2"]) == 2
    assert "final_state.npz is unusable: a readable state file" in _one_line(
        capsys.readouterr().err
    )


def test_states_are_read_into_shapes_without_computing_a_population(run, evo, monkeypatch):
    made = []
    init = Evolution.init

    def spy(self, *args, **kwargs):
        state = init(self, *args, **kwargs)
        made.append(not isinstance(state.params, jax.core.Tracer))
        return state

    monkeypatch.setattr(Evolution, "init", spy)
    load_state(evo, run / "final_state.npz")
    render.load_run_state(evo, run)
    (run / "final_state.npz").unlink()
    render.load_run_state(evo, run)
    assert made and not any(made), made


def test_a_metrics_row_cut_short_is_one_message_on_resume(run, capsys):
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    lines[3] = ",".join(lines[3].split(",")[:4]) + "\n"  # generation 2 lost its other columns
    (run / "metrics.csv").write_text("".join(lines))
    assert cli.main(["run", "--resume", str(run), "--generations", "9", "--quiet"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "'metrics.csv'" in err and "line 4 is cut short or malformed" in err


@pytest.mark.parametrize("where", ["header", "row"])
def test_a_metrics_line_over_the_csv_field_limit_is_one_message(run, capsys, where):
    """A metrics.csv zero-filled after a crash (no newline, longer than the csv module's field
    limit): one message on resume, and plot draws what comes before it."""
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    at = 0 if where == "header" else 3
    (run / "metrics.csv").write_text("".join(lines[:at]) + "\0" * 200_000)
    assert cli.main(["run", "--resume", str(run), "--generations", "9", "--quiet"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "'metrics.csv'" in err
    assert cli.main(["plot", str(run), "--out", str(run / "f.png")]) == (2 if at == 0 else 0)


def test_metrics_hold_integers_as_integers_and_summary_is_strict_json(run):
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    for r in rows:
        for k in ("generation", "inverted", "nonfinite_fitness", "env_steps", "monitor_stop"):
            int(r[k])
    assert [int(r["generation"]) for r in rows] == list(range(CFG.generations))

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    json.loads((run / "summary.json").read_text(), parse_constant=refuse)
    nan = float("nan")
    write_summary(run / "s.json", {"recovery_best": [{"gens_to_90": nan, "level": 2.0}], "x": nan})
    text = (run / "s.json").read_text()
    assert json.loads(text, parse_constant=refuse)["x"] is None
    for path_text in (text, text.replace("null", "NaN")):  # written now, and by older versions
        (run / "s.json").write_text(path_text)
        back = read_summary(run / "s.json")["recovery_best"][0]
        assert math.isnan(back["gens_to_90"]) and back["level"] == 2.0


# ------------------------------------------------------------------------------------------
# Property-based: random bytes, cuts and JSON values thrown at every file of a results folder
# and at --set. Each command ends with exit status 2 and one message, or (status 0) reads what
# it can with a documented fallback; never a traceback, never another file changed, never a
# state other than the one it names. Derandomized, so that the default suite is reproducible.

FUZZ = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


class _Built(Exception):
    """Raised where a command would build or compile: the input got through validation."""


def _damaged(data: st.DataObject, original: bytes) -> bytes:
    """Random bytes, a cut, or one byte changed."""
    kind = data.draw(st.sampled_from(["random", "cut", "flip"]))
    if kind == "random" or not original:
        return data.draw(st.binary(max_size=200))
    if kind == "cut":
        return original[: data.draw(st.integers(0, len(original) - 1))]
    i = data.draw(st.integers(0, len(original) - 1))
    return original[:i] + bytes([original[i] ^ data.draw(st.integers(1, 255))]) + original[i + 1 :]


def _damaged_json(data: st.DataObject, original: bytes) -> bytes:
    """A JSON file's damage: its bytes, the whole document replaced, or one value replaced."""
    kind = data.draw(st.sampled_from(["bytes", "document", "value"]))
    if kind == "bytes":
        return _damaged(data, original)
    if kind == "document":
        return json.dumps(data.draw(JSON_VALUES)).encode()
    doc = json.loads(original)
    doc[data.draw(st.sampled_from(sorted(doc)))] = data.draw(JSON_VALUES)
    return json.dumps(doc).encode()


def _hashes(folder, skip=()):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def _call(argv):
    """``cli.main(argv)`` in this process: (status, stdout, stderr); ``None`` if it got as far
    as building or compiling."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except _Built:
            rc = None
    text = err.getvalue()
    assert "Traceback" not in text, (argv, text)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if rc == 2:
        assert len(lines) == 1 and lines[0].startswith("selfref-ghn: error: "), (argv, text)
    else:
        assert rc in (0, None), (argv, rc, text)
        assert all(ln.startswith("selfref-ghn: ") for ln in lines), (argv, text)
    return rc, out.getvalue(), text


@contextlib.contextmanager
def _copy(folder, remove=()):
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(folder, copy)
        for name in remove:
            target = copy / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        yield copy


def _read_only(copy, argv):
    """Run a command that only reads the folder (its figures go elsewhere); check that it
    changed nothing in it."""
    before = _hashes(copy, skip=("champion.npz",))
    result = _call(argv)
    assert _hashes(copy, skip=("champion.npz",)) == before, argv
    return result


def _render(copy):
    rc, out, err = _read_only(copy, ["render", str(copy), "--format", "npz"])
    return rc, (json.loads(out) if rc == 0 else None), err


@pytest.fixture(scope="module")
def undamaged(finished_run):
    """What render replays from the intact folder, from its final state and each checkpoint."""
    with _copy(finished_run) as copy:
        final = _render(copy)[1]
        (copy / "final_state.npz").unlink()
        ck6 = _render(copy)[1]
        shutil.rmtree(copy / "checkpoints" / "6")
        ck3 = _render(copy)[1]
    return {"final_state.npz": final, "checkpoints/6": ck6, "checkpoints/3": ck3}


def _same_replay(shown, undamaged, err):
    """A replay names the state it read and equals that state's replay in the intact folder; a
    state other than the newest is named on stderr."""
    want = undamaged[shown["state"]]
    for k in ("return", "length", "fitness", "generation"):
        assert shown[k] == want[k], (k, shown, want)
    if shown["state"] == "checkpoints/3":
        assert "using checkpoint 3" in err


@settings(FUZZ, max_examples=15)
@given(data=st.data())
def test_fuzz_config_json(finished_run, data):
    with _copy(finished_run) as copy:
        path = copy / "config.json"
        path.write_bytes(_damaged_json(data, path.read_bytes()))
        fig = str(copy.parent / "f.png")
        plot = _read_only(copy, ["plot", str(copy), "--out", fig])[0]
        line = _read_only(copy, ["lineage", str(copy), "--out", fig])[0]
        with _refuse_building():
            resume = _call(["run", "--resume", str(copy), "--quiet"])[0]
        valid = plot == 0
        assert (line == 0) == valid or line == 2  # lineage.bin must fit P, C besides
        assert (resume is None) == valid


@settings(FUZZ, max_examples=12)
@given(data=st.data())
def test_fuzz_metrics_csv(finished_run, data):
    with _copy(finished_run) as copy:
        path = copy / "metrics.csv"
        original = path.read_bytes()
        path.write_bytes(_damaged(data, original))
        _read_only(copy, ["plot", str(copy), "--out", str(copy.parent / "f.png")])
        with _refuse_compiling():
            rc, _, err = _call(["run", "--resume", str(copy), "--quiet"])
        if rc == 2:
            assert "'metrics.csv'" in err
        else:  # every generation before the checkpoint was kept (a changed digit can't be seen)
            assert read_csv(path)["generation"].tolist() == list(range(CFG.generations))


@settings(FUZZ, max_examples=10)
@given(data=st.data(), name=st.sampled_from(["lineage.bin", "lineage.npy", "fitness.png"]))
def test_fuzz_lineage_and_unread_files(finished_run, data, name):
    with _copy(finished_run) as copy:
        path = copy / name
        path.write_bytes(_damaged(data, path.read_bytes()))
        fig = str(copy.parent / "f.png")
        rc = _read_only(copy, ["lineage", str(copy), "--out", fig])[0]
        assert rc == 0 or name == "lineage.bin"
        assert _read_only(copy, ["plot", str(copy), "--out", fig])[0] == 0


@FUZZ
@given(data=st.data())
def test_fuzz_final_state(finished_run, undamaged, data):
    with _copy(finished_run) as copy:
        path = copy / "final_state.npz"
        path.write_bytes(_damaged(data, path.read_bytes()))
        rc, shown, err = _render(copy)
        assert rc == 0  # checkpoints 3 and 6 are intact: the fallback always exists
        _same_replay(shown, undamaged, err)
        if shown["state"] != "final_state.npz":
            assert "final_state.npz is unusable" in err and "using checkpoint 6" in err


@FUZZ
@given(data=st.data(), step=st.sampled_from([3, 6]), which=st.integers(0, 100))
def test_fuzz_checkpoint_files(finished_run, undamaged, data, step, which):
    with _copy(finished_run, remove=["final_state.npz"]) as copy:
        item = copy / "checkpoints" / str(step) / "default"  # the files a restore reads
        files = sorted(p for p in item.rglob("*") if p.is_file())
        path = files[which % len(files)]
        path.write_bytes(_damaged(data, path.read_bytes()))
        rc, shown, err = _render(copy)
        assert rc == 0  # one of the two checkpoints is intact
        _same_replay(shown, undamaged, err)


@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_fuzz_summary_json(finished_run, data):
    with _copy(finished_run) as copy:
        path = copy / "summary.json"
        path.write_bytes(_damaged_json(data, path.read_bytes()))
        try:
            assert isinstance(read_summary(path), dict)
        except ConfigError as e:
            assert e.field == "summary.json"


@settings(FUZZ, max_examples=40)
@given(
    key=st.sampled_from([f.name for f in dataclasses.fields(Config)] + ["nope"]),
    value=st.one_of(st.text(max_size=12), JSON_VALUES.map(json.dumps)),
)
def test_fuzz_set(key, value):
    with _refuse_building():
        _call(["run", "quick", "--set", f"{key}={value}"])


@contextlib.contextmanager
def _refuse_building():
    def built(*a, **k):
        raise _Built

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Evolution, "create", classmethod(built))
        yield


@contextlib.contextmanager
def _refuse_compiling():
    def built(*a, **k):
        raise _Built

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Evolution, "compiled_chunk", built)
        yield


def test_a_damaged_checkpoint_without_a_digest_leaves_no_traceback(run):
    """orbax's own read errors (a checkpoint written before digests): the reads it abandons
    report themselves later from other threads; the command line shows one line only."""
    (run / "final_state.npz").unlink()
    for digest in (run / "checkpoints").rglob(DIGEST_FILE):
        digest.unlink()
    _flip(sorted((run / "checkpoints" / "6" / "default" / "d").iterdir())[0])  # its index
    proc = subprocess.run(
        [sys.executable, "-m", "selfref_ghn.tools.cli", "render", str(run), "--format", "npz"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("WARNING")]
    assert len(lines) == 1 and "using checkpoint 3" in lines[0], proc.stderr


def test_a_state_write_cut_short_leaves_the_previous_file(run, evo, monkeypatch):
    before = (run / "final_state.npz").read_bytes()
    state = load_state(evo, run / "final_state.npz")

    def cut_short(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", cut_short)
    with pytest.raises(KeyboardInterrupt):
        save_state(state, run / "final_state.npz")
    assert (run / "final_state.npz").read_bytes() == before
