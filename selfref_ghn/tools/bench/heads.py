"""Workload (f): the SR-GHN's size and cost per deterministic head as the policy grows (DESIGN
§2b).

The paper's ``dense`` head grows with the largest policy tensor; ``block`` and ``random_basis``
generate every tensor in blocks of ``block_size`` and should not. For every head of
``config.HEADS`` and every policy of :data:`POLICIES` (MLPs from 226 to about 200k
parameters, and MinAtar Breakout's conv policy where ``Config.policy_conv`` exists), one case
measures the SR-GHN's parameters, its fixed bases' floats, compile time, generation time at
``P = 64``, ``C = 2``, horizon 500 and, interleaved with it in the same process, the rollout
bound on the same batch (the same policy shapes rolled out with fixed parameters); the
**hypernetwork part** is generation minus bound.

A policy runs on a registered environment whose spaces match it (CartPole for 4-32-2) and
otherwise on a :mod:`~selfref_ghn.tools.bench.synthetic` one with the needed sizes: both the
bound and the generation step it, and its episodes never end before the horizon, so the
rollouts of both are the same work and the difference is the hypernetwork's. (Ant has the
27 inputs and 8 actions of 27-256-256-8, but costs about 1.6 s per batched step on two CPU
cores: 800 s of physics per generation at horizon 500. MinAtar Breakout has the conv policy's
10x10x4 images and 3 actions, but the SR-GHN's rollouts stop once every episode of the batch
has ended, which early policies' Breakout episodes soon do, while the bound plays all 500
steps: the difference would come out negative. CartPole has the same effect, smaller: there
the difference is a lower bound of the hypernetwork part.)

Adding a policy is one :class:`PolicySpec` entry; a policy built from config fields other than
``policy_hidden`` (a conv policy) names them in ``config``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from selfref_ghn.config import HEADS, Config

POPULATION = 64
CHILDREN = 2
HORIZON = 500
QUICK_HORIZON = 100
PLACEHOLDER_ENV = "CartPole-Switch"  # config.env_id of a synthetic case (the env replaces it)


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """One policy of the sweep.

    Attributes:
        obs_shape: the observation's shape.
        num_actions: discrete actions or the continuous action's size (the policy's outputs).
        hidden: ``config.policy_hidden``.
        discrete: a discrete action space (argmax) rather than a box (tanh).
        env_id: a registered environment with these spaces; ``None``: a synthetic one.
        config: further config fields that build this policy (``(name, value)`` pairs, e.g.
            ``policy_conv``).
        label: the policy's name in the tables (default ``obs-hidden-...-actions``).
    """

    obs_shape: tuple[int, ...]
    num_actions: int
    hidden: tuple[int, ...]
    discrete: bool = False
    env_id: str | None = None
    config: tuple[tuple[str, Any], ...] = ()
    label: str = ""

    @property
    def name(self) -> str:
        """``label``, or ``obs-hidden-...-actions``, e.g. ``"17-64-64-6"``."""
        sizes = (math.prod(self.obs_shape), *self.hidden, self.num_actions)
        return self.label or "-".join(map(str, sizes))

    @property
    def env_spec(self) -> tuple[tuple[int, ...], int, bool] | None:
        """The synthetic environment's ``(obs_shape, num_actions, discrete)``, or ``None``."""
        return None if self.env_id else (self.obs_shape, self.num_actions, self.discrete)

    @property
    def num_params(self) -> int:
        """The policy's parameter count, by hand: ``(k * k * c_in + 1) * features`` per
        ``VALID`` convolution (``policy_conv``), ``(fan_in + 1) * fan_out`` per dense layer."""
        n, shape = 0, self.obs_shape
        for features, k, stride in dict(self.config).get("policy_conv", ()):
            h, w, c = shape
            n += (k * k * c + 1) * features
            shape = ((h - k) // stride + 1, (w - k) // stride + 1, features)
        sizes = (math.prod(shape), *self.hidden, self.num_actions)
        return n + sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


POLICIES: tuple[PolicySpec, ...] = (
    PolicySpec((4,), 2, (32,), discrete=True, env_id="CartPole-Switch"),
    PolicySpec((17,), 6, (64, 64)),
    PolicySpec((27,), 8, (256, 256)),
    PolicySpec((67,), 21, (512, 256, 128)),
)
if "policy_conv" in Config.__dataclass_fields__:  # the conv policy (ConvPolicy), where it exists
    POLICIES += (
        PolicySpec(
            (10, 10, 4),
            3,
            (128,),
            discrete=True,
            config=(("policy_conv", ((16, 3, 1),)),),
            label="10x10x4-conv16-128-3",
        ),
    )


class HeadCase(NamedTuple):
    """A planned case of workload (f): its name, config, environment and timed calls."""

    name: str
    config: Config
    env_spec: tuple[tuple[int, ...], int, bool] | None
    repeats: int


def case_name(head: str, policy: PolicySpec) -> str:
    return f"f-{head}-{policy.name}"


def policy_of(name: str) -> str:
    """The policy part of a case name (``"f-block-17-64-64-6"`` -> ``"17-64-64-6"``)."""
    return name.split("-", 2)[2]


def head_cases(
    quick: bool = False,
    policies: Sequence[PolicySpec] = POLICIES,
    heads: Sequence[str] = HEADS,
) -> list[HeadCase]:
    """Every head on every policy: the block heads first, the dense head last (it is the one
    that grows, and a time budget that runs out then skips its largest cases).

    Args:
        quick: horizon 100 and two timed calls instead of horizon 500 and three.
        policies: the policies (default :data:`POLICIES`).
        heads: the heads (default all of ``config.HEADS``).
    """
    out = []
    for head in sorted(heads, key=lambda h: h == "dense"):
        for pol in policies:
            cfg = Config(
                env_id=pol.env_id or PLACEHOLDER_ENV,
                population_size=POPULATION,
                num_children=CHILDREN,
                horizon=QUICK_HORIZON if quick else HORIZON,
                policy_hidden=pol.hidden,
                head=head,
                **dict(pol.config),
            ).validate()
            out.append(HeadCase(case_name(head, pol), cfg, pol.env_spec, 2 if quick else 3))
    return out


def _cases(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in results["cases"] if c["workload"] == "f" and "error" not in c]


def markdown(results: dict[str, Any]) -> list[str]:
    """The table of workload (f)'s cases (empty if none ran)."""
    cases = _cases(results)
    if not cases:
        return []
    lines = [
        "### Heads and policy size (workload f): hypernetwork part = generation - rollout bound",
        "",
        "| head | policy | env | policy params | GHN params | basis floats (MB) "
        "| SR-GHN compile s | bound compile s | generation ms | bound ms "
        "| hypernetwork part ms | part / bound | paired | SR-GHN peak RSS MiB "
        "| bound peak RSS MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        m = c["methods"]
        basis = c["basis_floats"]
        lines.append(
            f"| {c['head']} | {policy_of(c['name'])} | {c['env_id']} | {c['policy_num_params']:,} "
            f"| {c['ghn_num_params']:,} | {basis:,} ({basis * 4 / 1e6:.2f}) "
            f"| {m['sr_ghn']['compile_s']:.1f} | {m['rollout_bound']['compile_s']:.1f} "
            f"| {m['sr_ghn']['generation_s'] * 1e3:.1f} "
            f"| {m['rollout_bound']['generation_s'] * 1e3:.1f} "
            f"| {c['hypernetwork_s'] * 1e3:.1f} | {c['hypernetwork_s'] / c['rollout_s']:.2f} "
            f"| {c['ratios']['sr_ghn_over_bound_paired'] - 1:.2f} "
            f"| {m['sr_ghn']['peak_rss_mb']:.0f} | {m['rollout_bound']['peak_rss_mb']:.0f} |"
        )
    horizon = cases[0]["horizon"]
    lines += [
        "",
        f"P={cases[0]['population_size']}, C={cases[0]['num_children']}: "
        f"{cases[0]['members']} members x {cases[0]['episodes']} episode(s) x horizon {horizon}. "
        "*part / bound*: hypernetwork part over the bound (medians); *paired*: the median over "
        "the interleaved rounds of generation / bound, minus 1. Basis MB: float32.",
    ]
    return lines


def plot(results: dict[str, Any], path: str | Path) -> bool:
    """GHN parameters and the hypernetwork part against policy parameters, one line per head
    (log scales); half the rollout bound dashed, for reference.

    Returns:
        ``True`` if a plot was written (it needs at least one case of workload f).
    """
    cases = _cases(results)
    if not cases:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_p, ax_t) = plt.subplots(1, 2, figsize=(10, 4))
    for head, marker in zip(HEADS, "osd", strict=True):
        pts = sorted((c for c in cases if c["head"] == head), key=lambda c: c["policy_num_params"])
        if not pts:
            continue
        x = [c["policy_num_params"] for c in pts]
        ax_p.plot(x, [c["ghn_num_params"] for c in pts], marker=marker, label=head)
        hn = [(c["policy_num_params"], c["hypernetwork_s"] * 1e3) for c in pts]
        hn = [(a, b) for a, b in hn if b > 0]  # a log axis shows no part at or below zero
        if hn:
            ax_t.plot(*zip(*hn, strict=True), marker=marker, label=f"{head}: generation - bound")
    bound: dict[int, list[float]] = {}
    for c in cases:
        bound.setdefault(c["policy_num_params"], []).append(c["rollout_s"] * 1e3 / 2)
    xs = sorted(bound)
    ax_t.plot(xs, [min(bound[x]) for x in xs], "k--", label="0.5 x rollout bound")
    for ax in (ax_p, ax_t):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("policy parameters")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax_p.set_ylabel("GHN parameters")
    ax_t.set_ylabel("ms per generation")
    m = results["machine"]
    c0 = cases[0]
    fig.suptitle(
        f"Heads and policy size: P={c0['population_size']}, C={c0['num_children']}, "
        f"horizon {c0['horizon']} ({m['backend']}, {m['cpus_usable']} cores)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
