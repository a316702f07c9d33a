"""One compiled generation (DESIGN §2 "Evolution loop", §4): the task (:mod:`.task`), rollouts
(:mod:`.rollout`), selection (:mod:`.selection`), the switch schedule (:mod:`.schedule`), the
population over devices (:mod:`.sharding`), the in-loop monitor (:mod:`.monitor`), and the
step and the scan (:mod:`.generation`); beside them evosax's ask/tell (:mod:`.ask_tell`) and
the evosax baselines (:mod:`.baselines`)."""
