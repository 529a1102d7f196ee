"""Environment kinds: how an `[[env]]` entry is loaded, sized, played and scored.

A kind is one module here implementing rltrain/kinds/base.py's protocols, and one line in KINDS.
The first kind whose `claims` accepts an entry loads it, so the more specific kinds come first.
"""

from __future__ import annotations

from rltrain.config import EnvConfig
from rltrain.kinds import foreign, native, openenv, verifiers
from rltrain.kinds.base import EnvKind, Kind

KINDS: tuple[Kind, ...] = (
    openenv.KIND,
    foreign.KIND,
    verifiers.KIND,
    native.KIND,  # last: every entry with an id
)


def kind_of(entry: EnvConfig) -> Kind:
    for kind in KINDS:
        if kind.claims(entry):
            return kind
    raise ValueError(
        f"[[env]] {entry.label}: no environment kind takes this entry ({', '.join(k.name for k in KINDS)})"
    )


def load(entry: EnvConfig) -> EnvKind:
    """The environment an `[[env]]` entry describes, loaded in this process by its kind."""
    return kind_of(entry).load(entry)
