"""Every preset is a valid configuration whose environment exists and matches its policy."""

import pytest
from selfref_ghn.envs import make

from selfref_ghn import presets
from selfref_ghn.config import ConfigError


@pytest.mark.parametrize("name", presets.names())
def test_preset_validates_and_builds_its_env(name):
    config = presets.get(name)
    env, params = make(config.env_id, **dict(config.env_kwargs))
    assert env.observation_space(params).shape[0] > 0
    for a, b in config.switch_intervals:
        assert 0 <= a < b <= config.generations


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="cartpole-switch"):
        presets.get("no-such-preset")


def test_paper_ant_setting():
    c = presets.get("ant")
    assert (c.population_size, c.num_children, c.generations, c.horizon) == (50, 2, 1000, 1000)
    assert c.policy_hidden == (32, 32, 32) and c.update_clip == 0.1 and c.obs_norm
