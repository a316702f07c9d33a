"""Lineage: records append, truncate and survive a torn write; the champion's ancestry is traced
through parents and children by hand-checked index arithmetic; ``selfref-ghn lineage`` draws it."""

import json

import numpy as np
import pytest

from selfref_ghn import cli, lineage

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
    assert lineage.truncate(path, P, 2) == 2
    np.testing.assert_array_equal(lineage.read(path, P), recs[:2])
    assert path.stat().st_size == 2 * lineage.record_dtype(P).itemsize
    with pytest.raises(ValueError, match="checkpoint is at generation 3"):
        lineage.truncate(path, P, 3)


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
