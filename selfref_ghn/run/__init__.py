"""The host side of a run (DESIGN §4: the host wakes every N generations): the run folder, the
one host loop (:mod:`.loop`), checkpoints, lineage, metrics, plots, and the process setup
(XLA:CPU options, several processes)."""
