"""``import selfref_ghn`` is light; every public name still resolves."""

import subprocess
import sys

import selfref_ghn

HEAVY = ("jax", "flax", "optax", "orbax", "evosax", "brax", "matplotlib", "mujoco", "gymnax")


def test_import_loads_no_heavy_library():
    code = f"import sys, selfref_ghn; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_public_name_resolves_to_its_definition():
    import importlib

    assert sorted(selfref_ghn.__all__) == sorted(selfref_ghn._EXPORTS)
    for name, module in selfref_ghn._EXPORTS.items():
        want = importlib.import_module(module)
        want = want if name == "presets" else getattr(want, name)
        assert getattr(selfref_ghn, name) is want, name
    assert set(selfref_ghn.__all__) <= set(dir(selfref_ghn))
    try:
        selfref_ghn.not_a_name  # noqa: B018
    except AttributeError as e:
        assert "not_a_name" in str(e)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
