"""Any flax policy through its graph: deep MLPs and conv policies round-trip, their forward
order, the pytrees that cannot be ordered, and the block head's size on each."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.evolution.task import make_task
from selfref_ghn.model.graph import graph_of
from selfref_ghn.model.policy import ConvPolicy, MLPPolicy, policy_template
from selfref_ghn.model.srghn import SRGHN
from selfref_ghn.tools import cli

POLICIES = {
    "mlp-27-256-256-8": (MLPPolicy((256, 256), 8), (27,)),
    "mlp-67-512-256-128-21": (MLPPolicy((512, 256, 128), 21), (67,)),
    "conv-minatar": (ConvPolicy(((16, 3, 1),), (128,), 3), (10, 10, 4)),
    "conv-two-layers": (ConvPolicy(((8, 3, 1), (16, 3, 2)), (64, 32), 6), (10, 10, 7)),
}


def _random_params(module, obs_shape, seed=0):
    """Parameters with every entry distinct (so a misplaced entry shows)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: rng.standard_normal(s.shape).astype(np.float32),
        policy_template(module, obs_shape),
    )


@pytest.mark.parametrize("name", POLICIES)
def test_params_round_trip_through_the_graph(name):
    module, obs_shape = POLICIES[name]
    params = _random_params(module, obs_shape)
    g = graph_of(policy_template(module, obs_shape))
    flat = g.ravel(params)
    assert flat.shape == (g.num_params,)
    back = g.unravel(flat)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    for a, b in zip(
        jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    # the flat layout is the graph order, leaf after leaf
    for name_, off, size in zip(g.names, g.offsets, g.sizes, strict=True):
        leaf = params
        for k in name_.split("/"):
            leaf = leaf[k]
        np.testing.assert_array_equal(flat[int(off) : int(off) + int(size)], jnp.ravel(leaf))


def test_forward_order_of_a_deep_mlp_and_a_conv_policy():
    mlp, obs = POLICIES["mlp-67-512-256-128-21"]
    g = graph_of(policy_template(mlp, obs))
    assert g.names == tuple(f"Dense_{i}/{leaf}" for i in range(4) for leaf in ("kernel", "bias"))
    assert g.shapes[0] == (67, 512) and g.shapes[-2] == (128, 21)
    conv, obs = POLICIES["conv-two-layers"]
    g = graph_of(policy_template(conv, obs))
    assert g.names == (
        "Conv_0/kernel", "Conv_0/bias", "Conv_1/kernel", "Conv_1/bias",
        "Dense_0/kernel", "Dense_0/bias", "Dense_1/kernel", "Dense_1/bias",
        "Dense_2/kernel", "Dense_2/bias",
    )  # fmt: skip
    # 10x10 -> 8x8 (3x3, stride 1) -> 3x3 (3x3, stride 2): 3*3*16 inputs to the first dense
    assert g.shapes[0] == (3, 3, 7, 8) and g.shapes[2] == (3, 3, 8, 16)
    assert g.shapes[4] == (144, 64)


def test_natural_sort_puts_layer_10_after_layer_2():
    mlp = MLPPolicy((4,) * 11, 2)
    g = graph_of(policy_template(mlp, (3,)))
    assert [n.split("/")[0] for n in g.names[::2]] == [f"Dense_{i}" for i in range(12)]


@pytest.mark.parametrize(
    "params,named",
    [
        ({"encoder": {"kernel": np.zeros((2, 2))}, "decoder": {"kernel": np.zeros((2, 2))}},
         "decoder"),
        ({"Dense_0": {"kernel": np.zeros((2, 2))}, "log_std": np.zeros(2)}, "log_std"),
        ({"Dense_0": {"kernel": np.zeros((2, 2)), "gamma": np.zeros(2)}}, "gamma"),
        ({"LayerNorm_0": {"scale": np.zeros(2)}, "Dense_0": {"kernel": np.zeros((2, 2))}},
         "LayerNorm_0"),
    ],
)  # fmt: skip
def test_a_pytree_without_forward_order_is_a_config_error(params, named):
    with pytest.raises(ConfigError, match=named) as err:
        graph_of(params, strict=True)
    assert err.value.field == "policy"
    assert "order_key" in str(err.value)
    # the caller's own order_key is always obeyed
    g = graph_of(params, order_key=lambda names: tuple(names))
    assert g.num_nodes == len(jax.tree_util.tree_leaves(params))


def test_block_head_does_not_grow_with_the_policy():
    cfg = Config(head="block").validate()
    sizes = {}
    for name, (module, obs_shape) in POLICIES.items():
        ghn = SRGHN.create(policy_template(module, obs_shape), cfg)
        sizes[name] = (ghn.num_params, ghn.policy_graph.num_nodes)
        if name == "conv-minatar":  # the generated conv policy has the template's shapes
            policy = jax.jit(ghn.policy_params)(ghn.init(jax.random.key(0)))
            want = policy_template(module, obs_shape)
            assert jax.tree_util.tree_structure(policy) == jax.tree_util.tree_structure(want)
            for a, b in zip(
                jax.tree_util.tree_leaves(policy), jax.tree_util.tree_leaves(want), strict=True
            ):
                assert a.shape == b.shape and bool(jnp.all(jnp.isfinite(a)))
    # the GHN's size depends on the number of policy tensors (one embedding each), not on their
    # sizes: the 6-tensor conv policy (132k parameters) has the GHN of the 6-tensor MLP (73k)
    conv, mlp = sizes["conv-minatar"], sizes["mlp-27-256-256-8"]
    assert conv[1] == mlp[1] == 6 and conv[0] == mlp[0]
    for name, (num_params, nodes) in sizes.items():
        assert num_params == mlp[0] + (nodes - 6) * cfg.embed_dim, name
    dense = SRGHN.create(policy_template(*POLICIES["conv-minatar"]), Config().validate())
    assert dense.num_params > 10 * sizes["conv-minatar"][0]


def test_config_builds_a_conv_policy_on_minatar_and_flattens_for_an_mlp():
    cfg = Config(env_id="Breakout-MinAtar", policy_conv=((16, 3, 1),), policy_hidden=(128,))
    task = make_task(cfg.validate())
    assert isinstance(task.policy, ConvPolicy) and task.obs_shape == (10, 10, 4)
    params = policy_template(task.policy, task.obs_shape)
    assert params["Dense_0"]["kernel"].shape == (8 * 8 * 16, 128)
    obs, _ = task.env.reset(jax.random.key(0), task.env_params)
    zero = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape), params)
    assert task.policy_fn(zero, obs).shape == ()
    mlp = make_task(Config(env_id="Breakout-MinAtar", policy_hidden=(32,)).validate())
    assert isinstance(mlp.policy, MLPPolicy) and mlp.obs_shape == (400,)
    params = policy_template(mlp.policy, mlp.obs_shape)
    zero = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape), params)
    assert mlp.policy_fn(zero, obs).shape == ()


def test_a_run_refuses_a_policy_without_forward_order():
    class EncoderDecoder(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2, name="decoder")(jnp.tanh(nn.Dense(8, name="encoder")(x)))

    with pytest.raises(ConfigError, match="decoder") as err:
        make_task(Config().validate(), policy=EncoderDecoder())
    assert err.value.field == "policy"


@pytest.mark.parametrize(
    "changes,field,message",
    [
        (dict(env_id="CartPole-Switch", policy_conv=((16, 3, 1),)), "policy_conv", "image"),
        (dict(env_id="Breakout-MinAtar", policy_conv=((16, 11, 1),)), "policy_conv", "fit"),
        (dict(env_id="Breakout-MinAtar", obs_norm=True), "obs_norm", "obs_norm=false"),
    ],
)
def test_task_refuses_what_the_observations_do_not_allow(changes, field, message):
    with pytest.raises(ConfigError, match=message) as err:
        make_task(Config(**changes).validate())
    assert err.value.field == field


@pytest.mark.parametrize(
    "value,shown",
    [("[[-16,3,1]]", "[-16, 3, 1]"), ("[[16,3]]", "[16, 3]"), ("[[16,0,1]]", "[16, 0, 1]")],
)
def test_cli_names_policy_conv_for_a_bad_value(value, shown, capsys):
    assert cli.main(["run", "quick", "--set", f"policy_conv={value}"]) == 2
    err = capsys.readouterr().err
    assert f"'policy_conv' = {shown}" in err and err.count("\n") == 1, err


def test_policy_conv_round_trips_through_config_json():
    cfg = Config().with_overrides({"policy_conv": "[[16,3,1],[8,2,2]]"})
    assert cfg.policy_conv == ((16, 3, 1), (8, 2, 2))
    assert Config.from_dict(cfg.to_dict()) == cfg
