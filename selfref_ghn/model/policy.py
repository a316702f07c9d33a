"""Policy networks: the phenotype an SR-GHN generates (DESIGN §2, "Policy").

An MLP with tanh hidden layers. Discrete action spaces take the argmax of the outputs;
continuous ones squash them with tanh and rescale to the action box. Any flax module can stand
in for :class:`MLPPolicy`: the SR-GHN only needs its parameter shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from selfref_ghn.types import Array, Params


class MLPPolicy(nn.Module):
    """Multi-layer perceptron with tanh hidden layers and a linear output.

    The SR-GHN generates every weight at a similar scale whatever the layer's fan-in, so with
    many inputs the pre-activations are large and a tanh-squashed continuous action saturates
    (docs/envs/ant.md measures this on Ant). ``fan_in_scale`` divides each layer's input by
    ``sqrt(fan_in)`` (the same as generating kernels of std ``1/sqrt(fan_in)``) and
    ``output_scale`` multiplies the outputs; the defaults leave the plain MLP.

    Example:
        >>> pol = MLPPolicy(hidden=(32,), num_outputs=2)
        >>> params = pol.init(jax.random.key(0), jnp.zeros(4))["params"]
        >>> pol.apply({"params": params}, jnp.zeros(4)).shape
        (2,)
    """

    hidden: Sequence[int]
    num_outputs: int
    fan_in_scale: bool = False
    output_scale: float = 1.0

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        def dense(width: int, x: Array) -> Array:
            if self.fan_in_scale:
                x = x / np.sqrt(x.shape[-1])
            return nn.Dense(width)(x)

        x = obs
        for width in self.hidden:
            x = jnp.tanh(dense(width, x))
        out = dense(self.num_outputs, x)
        return out if self.output_scale == 1.0 else out * self.output_scale


def action_fn_for(action_space) -> tuple[int, Callable[[Array], Array]]:
    """Output size and output->action map for a gymnax action space.

    Discrete(n): ``n`` outputs, argmax. Box: one output per dimension, tanh, rescaled to
    ``[low, high]`` where the bounds are finite.

    Returns:
        ``(num_outputs, action_fn)``.
    """
    if hasattr(action_space, "n"):
        return int(action_space.n), lambda out: jnp.argmax(out, axis=-1)
    shape = tuple(action_space.shape)
    low = np.broadcast_to(np.asarray(action_space.low, np.float32), shape)
    high = np.broadcast_to(np.asarray(action_space.high, np.float32), shape)
    size = int(np.prod(shape))
    if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
        mid, half = (high + low) / 2.0, (high - low) / 2.0
        return size, lambda out: (mid + half * jnp.tanh(out)).reshape(shape)
    return size, lambda out: jnp.tanh(out).reshape(shape)


def policy_template(module: nn.Module, obs_shape: tuple[int, ...]) -> Params:
    """Parameter shapes of a flax policy (``jax.ShapeDtypeStruct`` leaves), without compute."""
    variables = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(obs_shape))
    return variables["params"]
