"""JAX's persistent compilation cache for every command (DESIGN §4: one compiled program per
run, compiled once per machine).

A run compiles one program (its chunk of generations) and a few small ones (the initial state,
the policy replay). XLA's compilation dominates short runs on a CPU, and the program depends only
on the config's static shapes: the seed, the traced hyperparameters and the switch schedule are
inputs of the program, not constants in it. JAX can keep compiled programs on disk, keyed by
the program, the devices, the XLA flags and the JAX version; :func:`enable_compile_cache` turns
that on, so a second run of the same shapes (another seed, another method of the same size, the
same command again) loads its programs instead of compiling them.

Where the cache lives, first match wins:

1. ``--compile-cache PATH|off`` on the command line (the ``path`` argument);
2. the environment variable ``SELFREF_GHN_COMPILE_CACHE`` (a folder, or ``off``);
3. a folder already given to JAX (``JAX_COMPILATION_CACHE_DIR``);
4. ``$XDG_CACHE_HOME/selfref_ghn/jax``, or ``~/.cache/selfref_ghn/jax``.

``off`` (also ``0``, ``false``, ``no``, ``none`` or empty) leaves JAX's cache as it is: nothing
is written. Every program is cached, however small or fast to compile (JAX's own thresholds
would skip most of a run's programs). A folder that cannot be created means no cache, with a
warning; an entry JAX cannot read is compiled again, with JAX's warning (docs/compile-cache.md).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

ENV_VAR = "SELFREF_GHN_COMPILE_CACHE"
OFF = frozenset({"off", "0", "false", "no", "none", ""})


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/selfref_ghn/jax``, or ``~/.cache/selfref_ghn/jax`` when
    ``XDG_CACHE_HOME`` is unset or not an absolute path (the XDG rule)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "selfref_ghn" / "jax"


def resolve(path: str | os.PathLike | None = None) -> Path | None:
    """The cache folder the rules of this module choose, or None for no cache.

    Args:
        path: a folder or ``"off"`` (the command line's ``--compile-cache``), or None to
            read ``SELFREF_GHN_COMPILE_CACHE``, then JAX's own setting, then the default.

    Returns:
        The folder (not created), or None when the cache is off.

    Example:
        >>> resolve("off") is None
        True
        >>> resolve("/tmp/jax-cache")
        PosixPath('/tmp/jax-cache')
    """
    if path is None:
        path = os.environ.get(ENV_VAR)
    if path is None:
        import jax

        path = jax.config.values["jax_compilation_cache_dir"] or default_dir()
    text = os.fspath(path)
    if text.strip().lower() in OFF:
        return None
    return Path(text).expanduser()


def enable_compile_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache for this process, in the folder
    :func:`resolve` chooses, for programs of every size and compile time.

    Call it before the programs to be cached compile; it may be called again to move the cache
    (the programs compiled so far stay in memory).

    Args:
        path: as for :func:`resolve`.

    Returns:
        The folder in use, or None (the cache off, or the folder could not be created: a
        warning says so).
    """
    folder = resolve(path)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        warnings.warn(
            f"compile cache: cannot use {folder} ({e.strerror or e}); compiling without it "
            f"(set {ENV_VAR} to another folder or to off)",
            stacklevel=2,
        )
        return None
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    if jax.config.values["jax_compilation_cache_dir"] != str(folder):
        cc.reset_cache()  # JAX opens its cache folder once; a new folder needs a reset
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder


def add_compile_cache_option(p) -> None:
    """``--compile-cache PATH|off`` on an :mod:`argparse` parser (applied by the command line's
    ``main`` before anything compiles)."""
    p.add_argument(
        "--compile-cache",
        default=None,
        metavar="PATH|off",
        help=f"folder of JAX's persistent compilation cache, or off (default: ${ENV_VAR}, "
        f"else {default_dir().as_posix().replace(str(Path.home()), '~')}; "
        "selfref_ghn.run.compile_cache)",
    )


__all__ = ["ENV_VAR", "add_compile_cache_option", "default_dir", "enable_compile_cache", "resolve"]
