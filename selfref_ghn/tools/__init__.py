"""Tools built on runs: the command line (:mod:`.cli`), compare, sweep, bench, assess, render."""
