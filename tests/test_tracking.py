"""Experiment tracking (selfref_ghn.run.tracking): what W&B (offline) and TensorBoard hold is read
back from their own files and compared with the rows logged, generation by generation."""

import csv
import json
import struct
import sys
from pathlib import Path

import pytest

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.run import tracking
from selfref_ghn.run.folder import COLUMNS, load_run_config
from selfref_ghn.tools import cli

pytest.importorskip("wandb")
pytest.importorskip("tensorboardX")
pytest.importorskip("tensorboard")


@pytest.fixture(autouse=True)
def wandb_offline(tmp_path, monkeypatch):
    """W&B writes its runs to the run folder and nothing leaves the machine."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))


def _rows(generations, offset=0.0):
    """Rows with every metrics.csv column, each value telling its generation apart."""
    return [
        {k: float(g * 10 + i) + offset for i, k in enumerate(COLUMNS)}
        | {"generation": g, "inverted": g % 2}
        for g in generations
    ]


def _wandb_records(out: Path):
    """Every record of the run's offline ``.wandb`` files (one per session), oldest first.

    wandb no longer ships a Python reader for them; the file is a LevelDB-style log (a 7-byte
    header, 32 KiB blocks of chunks: crc32 (4), length (2), kind (1: whole, 2..4: first,
    middle, last piece)) of wandb's own protobuf ``Record``s, parsed with wandb's classes.
    """
    from wandb.proto import wandb_internal_pb2

    for path in sorted(out.glob("wandb/offline-run-*/run-*.wandb")):
        data, i, piece = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while i + 7 <= len(data):
            if 32768 - i % 32768 < 7:  # a block's tail too short for a chunk header
                i += 32768 - i % 32768
                continue
            _, n, kind = struct.unpack("<IHB", data[i : i + 7])
            piece, i = piece + data[i + 7 : i + 7 + n], i + 7 + n
            if kind in (1, 4):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(piece)
                piece = b""
                yield path.parent, record


def _wandb_history(out: Path):
    """``(steps, config, images)``: each logged step's values (a step logged twice is an
    error), the config's values, and the image files."""
    steps, config, images = {}, {}, []
    for run_dir, rec in _wandb_records(out):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            item = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in rec.history.item}  # fmt: skip
            step = rec.history.step.num
            item = {k: v for k, v in item.items() if not k.startswith("_")}
            if "fitness/path" in item:  # an image: its file's fields
                images.append(run_dir / "files" / item["fitness/path"])
                item = {k: v for k, v in item.items() if not k.startswith("fitness/")}
            assert not set(item) & set(steps.get(step, {})), f"step {step} logged twice"
            steps.setdefault(step, {}).update(item)
        elif kind in ("run", "config"):
            updates = rec.run.config.update if kind == "run" else rec.config.update
            config.update({u.key: json.loads(u.value_json) for u in updates})
    return steps, config, images


def _tensorboard(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _figure(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 1.5))
    plt.plot([0, 1], [1, 0])
    fig.savefig(path, dpi=50)
    plt.close(fig)
    return path


def _assert_holds(out: Path, rows, logdir: Path, config: Config):
    """W&B and TensorBoard hold each row's every column at its generation, once."""
    steps, params, images = _wandb_history(out)
    assert sorted(steps) == [r["generation"] for r in rows]
    for r in rows:
        assert steps[r["generation"]] == pytest.approx(r), r["generation"]
    assert {k: params[k] for k in ("population_size", "seed", "env_id")} == {
        "population_size": config.population_size, "seed": config.seed, "env_id": config.env_id
    }  # fmt: skip
    assert params["run_dir"] == str(out.absolute())
    assert images and all(p.exists() for p in images)  # one per session
    acc = _tensorboard(logdir)
    assert set(acc.Tags()["scalars"]) == set(COLUMNS)
    for k in COLUMNS:
        events = acc.Scalars(k)
        assert [e.step for e in events] == [r["generation"] for r in rows], k
        assert [e.value for e in events] == pytest.approx([r[k] for r in rows]), k
    image = acc.Images("fitness")[-1]
    assert image.step == rows[-1]["generation"] and image.width > 0
    text = acc.Tensors("config/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert json.loads(text.strip("`").removeprefix("json\n"))["population_size"] == (
        config.population_size
    )
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")


def test_parse_loggers_keeps_csv_first_and_names_a_bad_one():
    assert tracking.parse_loggers("tensorboard,csv, wandb") == ("csv", "tensorboard", "wandb")
    assert tracking.parse_loggers(["wandb", "wandb"]) == ("csv", "wandb")
    assert tracking.parse_loggers(None) == tracking.parse_loggers("csv") == ("csv",)
    with pytest.raises(ConfigError, match="'--logger' = 'mlflow'"):
        tracking.parse_loggers("csv,mlflow")


def test_csv_alone_opens_no_tracker(tmp_path):
    assert tracking.open_run("csv", tmp_path, Config(), _rows(range(3))) is None
    assert tracking.open_run("wandb,tensorboard", None, Config()) is None
    assert not (tmp_path / tracking.FILE).exists()


def test_every_column_of_every_generation_the_config_and_the_figure(tmp_path):
    out, cfg = tmp_path / "run", Config(population_size=8, seed=3)
    out.mkdir()
    rows = _rows(range(7))
    tracker = tracking.open_run("wandb,tensorboard", out, cfg, rows[:2])  # kept rows first
    tracker.log(rows[2:5])  # then chunk by chunk
    tracker.log(rows[5:])
    tracker.close([_figure(out / "fitness.png"), out / "not-drawn.png"])
    _assert_holds(out, rows, out / "tensorboard", cfg)
    state = json.loads((out / tracking.FILE).read_text())
    assert state["through"] == {"wandb": 6, "tensorboard": 6}
    assert state["loggers"] == ["csv", "wandb", "tensorboard"]


def test_a_resume_continues_the_same_runs_without_a_step_twice(tmp_path):
    out, cfg = tmp_path / "run", Config(population_size=8)
    out.mkdir()
    first = tracking.open_run("wandb,tensorboard", out, cfg)
    first.log(_rows(range(6), offset=0.5))  # generations 4 and 5 come after the checkpoint...
    first.close(failed=True)  # ...and the run dies
    wandb_id = json.loads((out / tracking.FILE).read_text())["wandb"]["id"]
    # the resume keeps rows 0..3 and plays 4..8 again (identical rows, unlike these)
    rows = _rows(range(9), offset=0.5)
    again = _rows(range(4, 9))
    assert tracking.resolve(None, out) == ("csv", "wandb", "tensorboard")  # the stored ones
    second = tracking.open_run(None, out, cfg, rows[:4], resume=True)
    second.log(again)
    second.close([_figure(out / "fitness.png")])
    assert json.loads((out / tracking.FILE).read_text())["wandb"]["id"] == wandb_id
    sessions = list(out.glob("wandb/offline-run-*"))
    assert len(sessions) == 2 and all(wandb_id in p.name for p in sessions)
    # W&B keeps what it logged (steps only increase) and gets 6..8; TensorBoard drops the dead
    # session's events from generation 4 on and takes the resumed ones
    steps, _, _ = _wandb_history(out)
    assert sorted(steps) == list(range(9))
    assert steps[5]["best_fitness"] == rows[5]["best_fitness"]
    assert steps[6]["best_fitness"] == again[2]["best_fitness"]
    acc = _tensorboard(out / "tensorboard")
    events = acc.Scalars("best_fitness")
    assert [e.step for e in events] == list(range(9))
    assert [e.value for e in events] == pytest.approx(
        [r["best_fitness"] for r in rows[:4] + again]
    )


def test_a_fresh_run_in_the_folder_starts_new_runs(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    tracking.open_run("wandb,tensorboard", out, Config(), _rows(range(5), 0.5)).close()
    old = json.loads((out / tracking.FILE).read_text())["wandb"]["id"]
    tracking.open_run("wandb,tensorboard", out, Config(), _rows(range(3))).close()
    assert json.loads((out / tracking.FILE).read_text())["wandb"]["id"] != old
    events = _tensorboard(out / "tensorboard").Scalars("best_fitness")
    assert [e.value for e in events] == [r["best_fitness"] for r in _rows(range(3))]


DAMAGED = [
    b'{"loggers": ["csv", "tensorb',
    b"[]",
    b'{"through": {"tensorboard": "7"}}',
    b'{"loggers": ["csv", "mlflow"]}',
    b'{"wandb": {"id": 3}}',
    b"\xff\xfe\x00garbage",
]


@pytest.mark.parametrize("damaged", DAMAGED)
def test_a_damaged_tracking_file_starts_new_runs_with_every_row(damaged, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / tracking.FILE).write_bytes(damaged)
    assert tracking.resolve(None, out) == ("csv",)
    assert "unreadable" in capsys.readouterr().err
    rows = _rows(range(4))
    tracking.open_run("tensorboard", out, Config(), rows, resume=True).close()
    events = _tensorboard(out / "tensorboard").Scalars("generation")
    assert [e.step for e in events] == [0, 1, 2, 3]


def test_runs_of_a_group_share_a_log_dir_and_a_wandb_group(tmp_path):
    root = tmp_path / "cmp"
    for method in ("srghn", "open_es"):
        out = root / method / "seed0"
        out.mkdir(parents=True)
        tracking.open_run("wandb,tensorboard", out, Config(), _rows(range(2)), root=root).close()
        run = next(r for _, r in _wandb_records(out) if r.WhichOneof("record_type") == "run")
        assert (run.run.run_group, run.run.display_name) == ("cmp", f"{method}/seed0")
        acc = _tensorboard(root / "tensorboard" / method / "seed0")
        assert [e.step for e in acc.Scalars("generation")] == [0, 1]


def _no_compile(*a, **k):
    raise AssertionError("compiled despite a missing extra")


@pytest.mark.parametrize("logger,module", [("wandb", "wandb"), ("tensorboard", "tensorboardX")])
@pytest.mark.parametrize("command", ["run", "compare", "sweep"])
def test_a_missing_extra_is_one_message_and_exit_2(
    command, logger, module, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, module, None)  # its import fails
    monkeypatch.setattr(Evolution, "compiled_chunk", _no_compile)
    out = tmp_path / "out"
    argv = [command, "quick", "--logger", f"csv,{logger}", "--out", str(out)]
    assert cli.main(argv + (["--seeds", "0"] if command != "run" else [])) == 2
    err = capsys.readouterr().err
    assert f"'--logger' = '{logger}'" in err and f"pip install 'selfref_ghn[{logger}]'" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not any(out.rglob("*.json"))  # nothing started


def test_a_resume_names_the_tracking_file_when_its_logger_is_missing(tmp_path, monkeypatch):
    (tmp_path / tracking.FILE).write_text(json.dumps({"loggers": ["csv", "wandb"]}))
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"tracking.json lists it \(or pass --logger csv\)"):
        tracking.resolve(None, tmp_path)
    assert tracking.resolve("csv", tmp_path) == ("csv",)


TINY_SETS = [
    "population_size=4", "num_children=2", "horizon=20", "embed_dim=8", "trunk_dim=8",
    "coeff_dim=4", "num_rates=3", "gnn_rounds=2", "policy_hidden=[8]", "log_every=2",
    "switch_intervals=[[2,4]]", "checkpoint_every=2",
]  # fmt: skip


@pytest.mark.slow
def test_a_tracked_run_and_its_resume_hold_what_metrics_csv_holds(tmp_path, monkeypatch):
    out = tmp_path / "run"
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    base = ["run", "quick", "--quiet", "--generations", "4", "--out", str(out), *sets]
    assert cli.main([*base, "--logger", "wandb,tensorboard"]) == 0
    # resumed without --logger: it keeps the run's trackers, and the same W&B run
    assert cli.main(["run", "--quiet", "--resume", str(out), "--generations", "8"]) == 0
    with (out / "metrics.csv").open(newline="") as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    assert [r["generation"] for r in rows] == list(range(8))
    wandb_id = json.loads((out / tracking.FILE).read_text())["wandb"]["id"]
    sessions = list(out.glob("wandb/offline-run-*"))
    assert len(sessions) == 2 and all(wandb_id in p.name for p in sessions)
    _assert_holds(out, rows, out / "tensorboard", load_run_config(out))


@pytest.mark.slow
def test_the_runs_of_a_batched_sweep_share_a_log_dir(tmp_path):
    from selfref_ghn.tools.sweep import run_sweep
    from tests.conftest import TINY

    cfg = Config(**{**TINY, "switch_intervals": ((2, 4),)})
    run_sweep(cfg, [0, 1], {"child_factor": [0.0]}, tmp_path, progress=False,
              loggers="tensorboard")  # fmt: skip
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}-child_factor=0.0"
        with (out / "metrics.csv").open(newline="") as f:
            best = [float(r["best_fitness"]) for r in csv.DictReader(f)]
        acc = _tensorboard(tmp_path / "tensorboard" / out.name)
        events = acc.Scalars("best_fitness")
        assert [e.step for e in events] == list(range(cfg.generations))
        assert [e.value for e in events] == pytest.approx(best)
        assert [i.step for i in acc.Images("fitness")] == [cfg.generations - 1]
