"""Lineage: records append, truncate and survive a torn write; the champion's ancestry is traced
through parents and children by hand-checked index arithmetic; ``selfref-ghn lineage`` draws it."""

import json

import numpy as np

from selfref_ghn.run import lineage
from selfref_ghn.tools import cli

P, C = 3, 2  # members 0..2 are parents; children of parent i are 3 + 2i, 4 + 2i


def _recs():
    """Three generations, survivors listed by rank."""
    r = np.zeros(3, lineage.record_dtype(P))
    r["generation"] = [0, 1, 2]
    # gen 0: slot 0 <- member 6 (child of parent 1), slot 1 <- parent 0, slot 2 <- member 3
    # gen 1: slot 0 <- parent 1,  slot 1 <- member 8 (child of parent 2), slot 2 <- parent 0
    # gen 2: slot 0 <- member 5 (child of parent 1), slot 1 <- parent 0, slot 2 <- parent 2
    r["selected"] = [[6, 0, 3], [1, 8, 0], [5, 0, 2]]
    r["survivor_fitness"] = [[5, 4, 3], [7, 6, 5], [9, 8, 7]]
    r["parent_rate"] = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]
    return r


def test_ancestry_follows_parents_and_children():
    line = lineage.ancestry(_recs(), C, champion=0)
    # gen 2: slot 0 came from member 5 = child of parent 1; gen 1: slot 1 came from member 8 =
    # child of parent 2; gen 0: slot 2 came from member 3 = child of parent 0
    np.testing.assert_array_equal(line["slot"], [2, 1, 0])
    np.testing.assert_array_equal(line["parent_slot"], [0, 2, 1])
    np.testing.assert_array_equal(line["child"], [True, True, True])
    np.testing.assert_array_equal(line["fitness"], [3, 6, 9])
    np.testing.assert_allclose(line["rate"], [0.1, 0.6, 0.8])
    # slot 1: parent 0 kept at gen 2 <- slot 0 after gen 1 = parent 1 kept <- slot 1 after
    # gen 0 = parent 0 kept
    kept = lineage.ancestry(_recs(), C, champion=1)
    np.testing.assert_array_equal(kept["child"], [False, False, False])
    np.testing.assert_array_equal(kept["parent_slot"], [0, 1, 0])
    np.testing.assert_array_equal(kept["slot"], [1, 0, 1])
    np.testing.assert_allclose(kept["rate"], [0.1, 0.5, 0.7])


def test_append_read_truncate_and_a_torn_record(tmp_path):
    path = tmp_path / lineage.FILE
    recs = _recs()
    lineage.append(path, recs[:2])
    lineage.append(path, recs[2:])
    np.testing.assert_array_equal(lineage.read(path, P), recs)
    with open(path, "ab") as f:  # a crash in the middle of the next record
        f.write(b"\x01\x02\x03")
    np.testing.assert_array_equal(lineage.read(path, P), recs)
    assert lineage.truncate(path, P, 2, C) == 2
    np.testing.assert_array_equal(lineage.read(path, P), recs[:2])
    assert path.stat().st_size == 2 * lineage.record_dtype(P).itemsize


def test_a_lineage_cut_short_or_missing_is_padded_with_unknown_generations(tmp_path, capsys):
    """A resume past what lineage.bin holds keeps the records it has, records the lost
    generations as unknown, keeps the damaged file and says so; the command still traces the
    champion's line back to the first lost generation."""
    path = tmp_path / lineage.FILE
    recs = _recs()
    lineage.append(path, recs[:2])
    with open(path, "ab") as f:
        f.write(recs[2:].tobytes()[:7])  # the third record torn
    assert lineage.truncate(path, P, 4, C) == 2
    assert "holds 2 of the 4 generations" in capsys.readouterr().err
    got = lineage.read(path, P)
    np.testing.assert_array_equal(got[:2], recs[:2])
    assert got["generation"].tolist() == [0, 1, 2, 3]
    assert (got["selected"][2:] == lineage.UNKNOWN).all()
    assert np.isnan(got["survivor_fitness"][2:]).all()
    assert (tmp_path / (lineage.FILE + ".damaged")).stat().st_size == 2 * got.itemsize + 7
    missing = tmp_path / "missing.bin"
    assert lineage.truncate(missing, P, 2, C) == 0
    # a record in order whose survivors are not member indices ends what is kept, as it ends
    # what the lineage command reads
    bad = recs.copy()
    bad["selected"][1, 0] = P * (1 + C)
    bad.tofile(path)
    assert lineage.truncate(path, P, 3, C) == 1
    assert lineage.valid_prefix(lineage.read(path, P), C) == 3
    assert (lineage.read(missing, P)["selected"] == lineage.UNKNOWN).all()
    # the line of a champion after gen 3 of [gen 0, gen 1, unknown, unknown] is not known
    line = lineage.ancestry(got, C)
    assert (line["slot"] == lineage.UNKNOWN).all() and np.isnan(line["fitness"]).all()
    assert "not recorded" in lineage.summary_lines(line)[0]
    # records after a damaged one (a generation out of order) are not kept
    shuffled = recs.copy()
    shuffled["generation"] = [0, 5, 2]
    assert lineage.in_order(shuffled) == 1


def test_records_from_chunk_metrics_skip_unrun_generations():
    m = {
        "generation": np.array([4, 5, -1]),
        "selected": np.arange(9).reshape(3, 3),
        "survivor_fitness": np.ones((3, 3)),
        "parent_rate": np.full((3, 3), 0.5),
    }
    r = lineage.records(m, [0, 1], P)
    np.testing.assert_array_equal(r["generation"], [4, 5])
    np.testing.assert_array_equal(r["selected"], [[0, 1, 2], [3, 4, 5]])


def test_lineage_command_prints_and_draws(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    cfg = {"population_size": P, "num_children": C, "switch_intervals": [[1, 2]], "seed": 0}
    (run / "config.json").write_text(json.dumps(cfg))
    lineage.append(run / lineage.FILE, _recs())
    assert cli.main(["lineage", str(run)]) == 0
    out = capsys.readouterr().out
    assert "born as a child 3 times in 3 generations" in out
    assert (run / "lineage.png").stat().st_size > 0
    assert cli.main(["lineage", str(run), "--champion", "7"]) == 2
    assert "'--champion' = 7" in capsys.readouterr().err
    assert cli.main(["lineage", str(tmp_path / "nope")]) == 2


def test_lineage_command_leaves_out_damaged_records_and_refuses_a_bad_config(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    cfg = {"population_size": P, "num_children": C}
    (run / "config.json").write_text(json.dumps(cfg))
    recs = _recs()
    recs["selected"][2] = [5, 0, 99]  # member 99 does not exist (P + P * C = 9 members)
    lineage.append(run / lineage.FILE, recs)
    assert cli.main(["lineage", str(run)]) == 0
    captured = capsys.readouterr()
    assert "record 2 is damaged; it and the 0 after it are left out" in captured.err
    assert "champion after generation 1" in captured.out
    recs["selected"][0] = [-7, 0, 0]
    (run / lineage.FILE).write_bytes(recs.tobytes())
    assert cli.main(["lineage", str(run)]) == 2
    err = capsys.readouterr().err
    assert "'lineage.bin'" in err and "records of this run" in err and err.count("\n") == 1
    (run / "config.json").write_text(json.dumps({**cfg, "population_size": [3]}))
    assert cli.main(["lineage", str(run)]) == 2
    err = capsys.readouterr().err
    assert "'population_size' = [3]: expected int" in err and "Traceback" not in err
