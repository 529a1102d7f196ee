"""Guards: notice from a run's metrics that it is going wrong (length running to the cap or collapsing,
repetition, entropy collapse, a trainer/sampler mismatch spike, train reward up while held-out eval is
down, no learning signal), and warn, stop, or roll back to the last checkpoint that passed them all.

Pure: no torch. `config` holds the `[[guards]]` entries and each signal's defaults; `events` what a
guard says (an event, a decision); `watch` the state machine the loop calls (`Guards.observe`,
`Guards.decide`); restoring a checkpoint into the live policy is rltrain/checkpoint.py's `roll_back`.
"""

from rltrain.guards.config import DEFAULTS, Guard, GuardConfig, resolve
from rltrain.guards.events import Decision, Event
from rltrain.guards.watch import Guards

__all__ = ["DEFAULTS", "Decision", "Event", "Guard", "GuardConfig", "Guards", "resolve"]
