"""The benchmark harness (issue 8) runs end to end on a tiny case and writes sane results.

Timing relations are not asserted (a loaded machine makes them noise); only the structure of
``bench.json``, that every figure is positive and finite, and that the reports are written.
"""

import functools
import json
import math
from collections import defaultdict

import jax
import numpy as np
import pytest

from selfref_ghn.config import Config
from selfref_ghn.evolution import selection
from selfref_ghn.evolution.generation import Evolution
from selfref_ghn.tools import bench, cli

from .conftest import TINY

SETS = [
    f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"
    for k, v in TINY.items()
    if k not in ("generations", "log_every")  # the preset's switch schedule needs its length
]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow  # 15-25 s on a 2-core CPU: `make test-all`
def test_tiny_benchmark_writes_json_and_tables(tmp_path):
    argv = ["--out", str(tmp_path), "--workloads", "a", "--repeats", "2", "--chunk", "2"]
    argv += [a for s in SETS for a in ("--set", s)]
    assert bench.main(argv) == 0

    results = json.loads((tmp_path / "bench.json").read_text())
    for key in ("cpu_model", "cpu_count", "jax_version", "backend", "git_hash"):
        assert key in results["machine"]
    (case,) = results["cases"]
    assert "error" not in case, case.get("error")
    assert case["population_size"] == TINY["population_size"]
    assert case["members"] == TINY["population_size"] * (1 + TINY["num_children"])
    assert case["env_steps_per_generation"] == case["members"] * TINY["horizon"]
    assert set(case["methods"]) == set(bench.METHODS)
    for name, m in case["methods"].items():
        for key in ("compile_s", "generation_s", "generations_per_s", "env_steps_per_s"):
            assert _positive(m[key]), (name, key, m[key])
        assert _positive(m["peak_rss_mb"])
        assert len(m["generation_s_all"]) == 2
        assert m["finite_outputs"], name
    assert all(_positive(r) for r in case["ratios"].values())
    assert math.isfinite(case["hypernetwork_s"]) and _positive(case["rollout_s"])

    prof = case["profile"]
    assert not prof["errors"], prof["errors"]
    for phase in ("mutation", "policy_generation", "rollout", "selection"):
        assert _positive(prof["seconds"][phase]), phase
    assert math.isclose(sum(prof["fractions"].values()), 1.0, rel_tol=1e-6)
    assert _positive(prof["step_s"]) and _positive(prof["step_over_phases"])
    assert prof["generation"] == 2 * (1 + 2)  # profiled where the timed calls ended

    table = (tmp_path / "bench.md").read_text()
    assert "| a | CartPole-Switch |" in table and "Phase profile" in table


def test_plan_covers_workloads_and_skips_missing_envs():
    cases, skipped = bench.plan(["a", "b", "c", "d", "e"], quick=True)
    names = [c.name for c in cases]
    assert "a" in names and "e-w32" in names and "e-w128" in names
    assert any(n.startswith("c-P") for n in names)
    e = {c.name: c.config.policy_hidden for c in cases if c.workload == "e"}
    assert e == {"e-w32": (32,), "e-w128": (128,)}
    for s in skipped:  # environments whose modules are missing are noted, not fatal
        assert s["workload"] == "d" and s["reason"]


def test_bench_is_a_cli_subcommand():
    args = cli.build_parser().parse_args(["bench", "--quick", "--workloads", "a"])
    assert args.quick and args.workloads == "a" and callable(args.func)


# The methods of Evolution.step that the phase profile times on their own.
_PHASE_METHODS = ("mutate_population", "policies", "evaluate_members")


def _spec(args) -> tuple:
    """Tree structure, and shape and dtype of every array (the value of anything else)."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return str(treedef), tuple(
        (tuple(np.shape(x)), str(x.dtype)) if hasattr(x, "dtype") else repr(x) for x in leaves
    )


@pytest.mark.parametrize("overrides", [{}, {"num_children": 3, "selection_ties": "children"}])
def test_profile_phases_get_the_inputs_the_fused_step_gives_them(monkeypatch, overrides):
    """Each phase is called with exactly what ``Evolution.step`` passes it (traced shapes)."""
    evo = Evolution.create(Config(**{**TINY, **overrides}))
    state = evo.init()
    seen: dict[str, defaultdict] = {"step": defaultdict(set), "profile": defaultdict(set)}
    where = ["step"]

    def recorder(name, fn, method):
        @functools.wraps(fn)
        def wrapped(*args):
            seen[where[0]][name].add(_spec(args[1:] if method else args))
            return fn(*args)

        return wrapped

    for name in _PHASE_METHODS:
        monkeypatch.setattr(Evolution, name, recorder(name, getattr(Evolution, name), True))
    survivors = recorder("survivors", selection.survivors, False)
    # the step's selection (selection.SELECT's functions) and the profile's both call it here
    monkeypatch.setattr(selection, "survivors", survivors)
    # the initial population's policies are no phase of a generation: not recorded
    monkeypatch.setattr(Evolution, "init", lambda self, *a, **k: state)

    jax.eval_shape(evo.step, state)
    where[0] = "profile"
    prof = bench.profile_phases(evo, repeats=1)

    assert not prof["errors"], prof["errors"]
    assert set(seen["step"]) == {*_PHASE_METHODS, "survivors"}
    for name, specs in seen["step"].items():
        assert len(specs) == 1, (name, specs)
        assert seen["profile"][name] == specs, name


def test_profile_phases_compute_the_fused_steps_next_state(tiny_config):
    """Chained, the phases' inputs and outputs are the step's: same members, same parameters."""
    evo = Evolution.create(tiny_config)
    state = evo.init()
    phases = bench.generation_phases(evo, state)
    assert list(phases) == ["mutation", "policy_generation", "rollout", "selection"]
    fn, args = phases["selection"]
    top_fit, params, policy = jax.jit(fn)(*args)
    nxt, metrics = jax.jit(evo.step)(state)
    np.testing.assert_allclose(top_fit, nxt.fitness)
    np.testing.assert_allclose(params, nxt.params, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(policy, nxt.policy, rtol=1e-5, atol=1e-6)


def test_rollout_bound_simulates_the_whole_horizon(monkeypatch):
    """The bound's fixed policies are random and may all end their episodes early; the bound
    must still simulate ``horizon`` steps (what its env-steps/s count), or an evolved
    population's longer episodes would make SR-GHN look slower than it is."""
    from selfref_ghn.evolution import rollout

    exact = []
    real = rollout.evaluate

    def spy(*args, exact_horizon=False, **kw):
        exact.append(exact_horizon)
        return real(*args, exact_horizon=exact_horizon, **kw)

    monkeypatch.setattr(rollout, "evaluate", spy)
    case = bench.Case("t", "a", Config(**TINY), chunk=1, repeats=1)
    methods, _ = bench.build_methods(case)
    fn, carry, _ = methods["rollout_bound"]
    jax.eval_shape(fn, carry)
    assert exact == [True]


# --- workload (f): heads and policy size ------------------------------------------------


def test_head_cases_have_the_sizes_they_claim():
    """Every planned case of workload (f) has the head, policy, environment and batch the table
    names; built, one policy's cases have ``SRGHN.create(...).num_params`` of that policy and
    config, the policy's parameter count and its environment's spaces."""
    from selfref_ghn.model.policy import MLPPolicy, policy_template
    from selfref_ghn.model.srghn import SRGHN
    from selfref_ghn.tools.bench import harness, heads

    cases, skipped = bench.plan(["heads"])
    assert not skipped
    specs = {p.name: p for p in heads.POLICIES}
    assert sorted((c.config.head, heads.policy_of(c.name)) for c in cases) == sorted(
        (h, p) for h in ("dense", "block", "random_basis") for p in specs
    )
    for case in cases:
        spec, cfg = specs[heads.policy_of(case.name)], case.config
        assert case.name.split("-")[1] == cfg.head
        assert case.methods == ("sr_ghn", "rollout_bound") and case.chunk == 1
        assert (cfg.population_size, cfg.num_children, cfg.horizon) == (64, 2, 500)
        assert cfg.num_members * cfg.episodes == 64 * 3
        assert cfg.policy_hidden == spec.hidden
        assert (case.env_spec is None) == (spec.env_id is not None)
        if spec.env_id is not None:
            assert cfg.env_id == spec.env_id
        if spec.name == "17-64-64-6":
            evo = harness.evolution_of(case)
            assert evo.config.head == cfg.head
            assert evo.obs_shape == spec.obs_shape == (17,)
            assert evo.policy.num_outputs == spec.num_actions == 6
            template = policy_template(MLPPolicy(spec.hidden, spec.num_actions), spec.obs_shape)
            assert evo.ghn.num_params == SRGHN.create(template, cfg).num_params
            assert evo.ghn.policy_graph.num_params == spec.num_params == 18 * 64 + 65 * 64 + 390
        elif spec.config and cfg.head == "block":  # the conv policy, where it exists
            from selfref_ghn.model.policy import ConvPolicy

            evo = harness.evolution_of(case)
            assert evo.obs_shape == spec.obs_shape == (10, 10, 4)
            assert evo.env.name == "synthetic(10x10x4 -> 3 discrete)"
            module = ConvPolicy(((16, 3, 1),), spec.hidden, spec.num_actions)
            template = policy_template(module, spec.obs_shape)
            assert evo.ghn.num_params == SRGHN.create(template, cfg).num_params
            conv, dense = 3 * 3 * 4 * 16 + 16, (8 * 8 * 16 + 1) * 128 + 129 * 3
            assert evo.ghn.policy_graph.num_params == spec.num_params == conv + dense


@pytest.mark.parametrize("head", ["dense", "block", "random_basis"])
def test_head_case_bound_rolls_out_the_generated_policy_shapes(monkeypatch, head):
    """The rollout bound of a workload (f) case rolls out, on the case's environment and batch,
    policies of exactly the shapes its SR-GHN generates (tiny sizes, synthetic env)."""
    from selfref_ghn.evolution import rollout
    from selfref_ghn.tools.bench import heads

    spec = heads.PolicySpec((5,), 3, (6, 4))
    sets = {k: str(TINY[k]) for k in ("embed_dim", "trunk_dim", "coeff_dim", "num_rates")}
    sets.update(population_size="4", horizon="7", gnn_rounds="1", block_size="8")
    (hc,) = heads.head_cases(policies=[spec], heads=[head])
    cfg = hc.config.with_overrides(sets)
    case = bench.Case(hc.name, "f", cfg, 1, 1, False, hc.env_spec, ("sr_ghn", "rollout_bound"))

    seen = []
    real = rollout.evaluate

    def spy(key, env, env_params, policy_fn, params, horizon, episodes, *a, **kw):
        seen.append((env.name, jax.tree.map(lambda x: tuple(x.shape), params), horizon, episodes))
        return real(key, env, env_params, policy_fn, params, horizon, episodes, *a, **kw)

    monkeypatch.setattr(rollout, "evaluate", spy)
    methods, evo = bench.build_methods(case)
    fn, carry, _ = methods["rollout_bound"]
    jax.eval_shape(fn, carry)
    _, member_params = carry
    assert {x.shape[0] for x in jax.tree.leaves(member_params)} == {cfg.num_members}
    expected = {
        "Dense_0": {"kernel": (5, 6), "bias": (6,)},
        "Dense_1": {"kernel": (6, 4), "bias": (4,)},
        "Dense_2": {"kernel": (4, 3), "bias": (3,)},
    }
    generated = jax.eval_shape(evo.ghn.policy_params, evo.ghn.init(jax.random.key(0)))
    assert jax.tree.map(lambda x: tuple(x.shape), generated) == expected
    assert evo.ghn.policy_graph.num_params == spec.num_params
    assert seen == [("synthetic(5 -> 3 box)", expected, 7, 1)]


def test_only_selects_cases_by_name(monkeypatch, tmp_path):
    from selfref_ghn.tools.bench import cli as bench_cli

    seen = []

    def fake_run(cases, *args, **kwargs):
        seen.extend(cases)
        return {"cases": []}

    monkeypatch.setattr(bench_cli, "run_benchmark", fake_run)
    monkeypatch.setattr(bench_cli, "markdown", lambda results: "")
    argv = ["--out", str(tmp_path), "--workloads", "heads", "--only", "dense-4-,block-17-"]
    assert bench.main(argv) == 0
    assert sorted(c.name for c in seen) == ["f-block-17-64-64-6", "f-dense-4-32-2"]


def test_profile_refuses_a_mode_whose_phases_differ():
    evo = Evolution.create(Config(**{**TINY, "evolution_mode": "generational"}))
    with pytest.raises(ValueError, match="evolution_mode='generational'"):
        bench.generation_phases(evo, None)
