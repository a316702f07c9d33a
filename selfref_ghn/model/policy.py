"""Policy networks: the phenotype an SR-GHN generates (DESIGN §2, "Policy").

An MLP with tanh hidden layers (:class:`MLPPolicy`), or convolutions then an MLP for image
observations (:class:`ConvPolicy`, e.g. MinAtar's 3x3x16 conv and 128-unit dense layer).
Discrete action spaces take the argmax of the outputs; continuous ones squash them with tanh
and rescale to the action box. Any flax module can stand in for them: the SR-GHN only needs its
parameter shapes, put in forward order by :mod:`selfref_ghn.model.graph`'s rule.
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
        return _mlp(obs, self.hidden, self.num_outputs, self.fan_in_scale, self.output_scale)


def _mlp(
    x: Array, hidden: Sequence[int], num_outputs: int, fan_in_scale: bool, output_scale: float
) -> Array:
    """Tanh dense layers then a linear output, inside the calling module's compact method."""

    def dense(width: int, x: Array) -> Array:
        if fan_in_scale:
            x = x / np.sqrt(x.shape[-1])
        return nn.Dense(width)(x)

    for width in hidden:
        x = jnp.tanh(dense(width, x))
    out = dense(num_outputs, x)
    return out if output_scale == 1.0 else out * output_scale


class ConvPolicy(nn.Module):
    """Convolutions, then a tanh MLP, for ``(H, W, C)`` image observations.

    Each layer of ``conv`` is ``(features, kernel, stride)``: a square ``VALID`` convolution
    (no padding, as in MinAtar's reference network) followed by tanh; the feature map is then
    flattened into :class:`MLPPolicy`'s layers (``hidden``, then ``num_outputs``).
    ``fan_in_scale`` and ``output_scale`` are :class:`MLPPolicy`'s (a convolution's fan-in is
    ``kernel * kernel * channels``). Parameters are named ``Conv_i`` then ``Dense_i``: the
    forward-order rule of :mod:`selfref_ghn.model.graph` orders them as they are applied.

    Example:
        >>> pol = ConvPolicy(conv=((16, 3, 1),), hidden=(128,), num_outputs=3)
        >>> params = pol.init(jax.random.key(0), jnp.zeros((10, 10, 4)))["params"]
        >>> params["Conv_0"]["kernel"].shape, params["Dense_0"]["kernel"].shape
        ((3, 3, 4, 16), (1024, 128))
        >>> pol.apply({"params": params}, jnp.zeros((10, 10, 4))).shape
        (3,)
    """

    conv: Sequence[tuple[int, int, int]]
    hidden: Sequence[int]
    num_outputs: int
    fan_in_scale: bool = False
    output_scale: float = 1.0

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        x = obs
        for features, kernel, stride in self.conv:
            if self.fan_in_scale:
                x = x / np.sqrt(kernel * kernel * x.shape[-1])
            conv = nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="VALID")
            x = jnp.tanh(conv(x))
        x = x.reshape(*x.shape[:-3], -1)
        return _mlp(x, self.hidden, self.num_outputs, self.fan_in_scale, self.output_scale)


def conv_output_shape(
    obs_shape: tuple[int, ...], conv: Sequence[tuple[int, int, int]]
) -> tuple[int, int, int]:
    """The ``(H, W, C)`` feature map ``conv`` layers (``VALID``) make of an ``(H, W, C)`` image;
    a side below 1 means the image is too small for them."""
    h, w, c = obs_shape
    for features, kernel, stride in conv:
        h, w, c = (h - kernel) // stride + 1, (w - kernel) // stride + 1, features
    return h, w, c


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
        mid, half = jnp.asarray((high + low) / 2.0), jnp.asarray((high - low) / 2.0)
        return size, lambda out: (mid + half * jnp.tanh(out)).reshape(shape)
    return size, lambda out: jnp.tanh(out).reshape(shape)


def policy_template(module: nn.Module, obs_shape: tuple[int, ...]) -> Params:
    """Parameter shapes of a flax policy (``jax.ShapeDtypeStruct`` leaves), without compute."""
    variables = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(obs_shape))
    return variables["params"]
