"""Built-in Hamiltonian systems and their registry.

``SYSTEMS`` maps the public name (used by the CLI, the REST API and dataset specs) to the class;
`make_system` builds one with validated parameters.
"""

from __future__ import annotations

from typing import Any

from hinn_core.errors import ConfigError
from hinn_core.systems.base import System
from hinn_core.systems.henon_heiles import HenonHeiles
from hinn_core.systems.nbody import ThreeBody, TwoBody
from hinn_core.systems.nonseparable import NonSeparable
from hinn_core.systems.pendulum import Pendulum
from hinn_core.systems.spring import Spring

SYSTEMS: dict[str, type[System]] = {
    cls.name: cls for cls in (Spring, Pendulum, TwoBody, ThreeBody, HenonHeiles, NonSeparable)
}


def make_system(name: str, parameters: dict[str, Any] | None = None) -> System:
    """The system registered as ``name`` with ``parameters`` (defaults for those left out)."""
    try:
        cls = SYSTEMS[name]
    except KeyError:
        raise ConfigError(f"unknown system '{name}'; choose one of {sorted(SYSTEMS)}", field="system") from None
    return cls(params=dict(parameters or {}))


__all__ = ["SYSTEMS", "System", "make_system", "Spring", "Pendulum", "TwoBody", "ThreeBody",
           "HenonHeiles", "NonSeparable"]
