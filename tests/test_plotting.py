"""``selfref-ghn plot``: a run's figure and summary from its metrics.csv, at any time; the
trailing mean it smooths with; clear errors for a folder it cannot read."""

import csv
import json

import numpy as np
import pytest

from selfref_ghn.config import Config
from selfref_ghn.run.metrics import CSV_COLUMNS, parse_row, read_csv
from selfref_ghn.run.plotting import trailing_mean
from selfref_ghn.tools import cli


def test_trailing_mean_matches_a_loop():
    y = np.random.default_rng(0).normal(size=23)
    for n in (1, 2, 5, 30):
        want = [y[max(0, i - n + 1) : i + 1].mean() for i in range(len(y))]
        np.testing.assert_allclose(trailing_mean(y, n), want, rtol=1e-12)


def _run_folder(tmp_path, best, switch_intervals):
    run = tmp_path / "run"
    run.mkdir()
    cfg = Config(env_id="CartPole-Switch", switch_intervals=switch_intervals, generations=100)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    with (run / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for g, b in enumerate(best):
            row = dict.fromkeys(CSV_COLUMNS, 0.0)
            row.update(generation=g, best_fitness=b, mean_fitness=b / 2, mutation_rate_mean=0.1,
                       mutation_rate_min=0.05, mutation_rate_max=0.2, diversity=0.01,
                       env_steps=1000 * (g + 1), wall_time=0.5 * (g + 1))  # fmt: skip
            w.writerow(row)
    return run


def test_plot_command_summarises_an_unfinished_run_and_draws_it(tmp_path, capsys):
    # 20 generations at 10, a switch at 20 that drops best to 2 for 5 generations, then 10 again:
    # back to 50%, 90% and 100% of the level 5 generations after the switch.
    best = [10.0] * 20 + [2.0] * 5 + [10.0] * 15
    run = _run_folder(tmp_path, best, [[20, 60]])  # 40 of the config's 100 generations played
    assert len(read_csv(run / "metrics.csv")["generation"]) == 40
    assert cli.main(["plot", str(run), "--smooth", "5"]) == 0
    out = capsys.readouterr().out
    assert "generations 0-39 (40 rows), wall time 20 s, 0.0 M environment steps" in out
    assert "best 10.00 (max 10.00), mean 5.00, rate 0.100" in out
    assert "switch at 20: best before 10.00; generations until back to 50/90/100% of it: " in out
    assert "first reached 5/5/5, held 10 generations 5/5/5" in out
    assert (run / "fitness.png").stat().st_size > 0
    assert cli.main(["plot", str(run), "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").stat().st_size > 0


def test_plot_command_tells_a_first_return_from_a_held_one(tmp_path, capsys):
    # Level 10; after the switch at 20: 4 generations at 0, one at 9.5 (first back to 50% and
    # 90% after 4), 5 at 0, then 10 at 10 (held from 10): 100% is first reached there too.
    best = [10.0] * 20 + [0.0] * 4 + [9.5] + [0.0] * 5 + [10.0] * 10
    run = _run_folder(tmp_path, best, [[20, 60]])
    assert cli.main(["plot", str(run)]) == 0
    assert "first reached 4/4/10, held 10 generations 10/10/10" in capsys.readouterr().out


def test_plot_command_says_when_a_switch_has_no_positive_level(tmp_path, capsys):
    run = _run_folder(tmp_path, [-5.0] * 30, [[20, 60]])
    assert cli.main(["plot", str(run)]) == 0
    assert "switch at 20: best before -5.00 (not positive" in capsys.readouterr().out


def test_read_csv_stops_at_a_row_cut_short(tmp_path):
    run = _run_folder(tmp_path, [1.0, 2.0, 3.0], [])
    text = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text(text[: text.rindex("\n", 0, -1) + 8])  # third row: 7 chars
    m = read_csv(run / "metrics.csv")
    assert m["best_fitness"].tolist() == [1.0, 2.0]
    assert set(m) == set(CSV_COLUMNS)


@pytest.mark.parametrize("case", ["no folder", "no rows", "smooth 0"])
def test_plot_command_refuses_what_it_cannot_draw(tmp_path, capsys, case):
    run = _run_folder(tmp_path, [1.0, 2.0], [])
    argv = ["plot", str(run)]
    if case == "no folder":
        argv = ["plot", str(tmp_path / "nope")]
    elif case == "no rows":
        (run / "metrics.csv").write_text(",".join(CSV_COLUMNS) + "\n")
    else:
        argv += ["--smooth", "0"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert {"no folder": "config.json", "no rows": "has rows", "smooth 0": "--smooth"}[case] in err
    assert not (run / "fitness.png").exists()
    if case == "no folder":  # the plot command's own argument, not run's --resume
        assert "invalid config field 'DIR'" in err and "--resume" not in err


def test_plot_command_says_which_rows_of_a_damaged_metrics_csv_it_left_out(tmp_path, capsys):
    run = _run_folder(tmp_path, [1.0, 2.0, 3.0, 4.0, 5.0], [])
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace(",", ",x", 1)  # generation 1: a value that is not a number
    (run / "metrics.csv").write_text("".join(lines))
    assert cli.main(["plot", str(run)]) == 0
    captured = capsys.readouterr()
    assert "generations 0-0 (1 rows)" in captured.out
    assert "line 3 is malformed; it and the 3 lines after it are left out" in captured.err
    lines[2] = "\x00" + lines[2]
    (run / "metrics.csv").write_text("".join(lines))
    assert cli.main(["plot", str(run)]) == 0
    assert "line 3 is malformed" in capsys.readouterr().err
    (run / "metrics.csv").write_bytes(b"\xff\xfe" + "".join(lines).encode())
    assert cli.main(["plot", str(run)]) == 2
    assert "a header with the columns" in capsys.readouterr().err


def test_parse_row_refuses_rows_cut_short_or_malformed():
    names = ["generation", "best_fitness"]
    assert parse_row({"generation": "2", "best_fitness": "1.0"}, names) == {
        "generation": 2.0,
        "best_fitness": 1.0,
    }
    assert parse_row({"generation": "2.0", "best_fitness": "nan"}, names) is not None
    for bad in ("2.5", "-1", "inf", "nan", ""):
        assert parse_row({"generation": bad, "best_fitness": "1"}, names) is None, bad
    assert parse_row({"generation": "2", "best_fitness": "1", None: ["7"]}, names) is None
    assert parse_row({"generation": "2", "best_fitness": None}, names) is None
