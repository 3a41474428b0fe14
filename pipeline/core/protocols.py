"""The two seams of the core, as typing Protocols: a ``Problem`` (data plus a step
function) and a ``Policy`` (anything the simulator can roll).

Both are ``runtime_checkable``: ``isinstance(x, Problem)`` checks that every member is
present (not the signatures; ``tests/test_contracts.py`` checks those, for every
registered problem and every policy class of the package).

A problem class inherits ``pipeline.core.problems.base.ProblemBase`` (per-product
parameters, the default ``default_properties``); a policy needs no base class.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import Tensor

from pipeline.core.batch import ProductBatch
from pipeline.core.properties import Property

if TYPE_CHECKING:  # the problems import this module: their base module only for annotations
    from pipeline.core.problems.base import StateSpace, Step


@runtime_checkable
class Problem(Protocol):
    """An inventory problem: a small dataclass whose fields are the population-level
    parameters (``problem.params`` in the config). Per-product economics (holding,
    shortage, unit cost, price, lead time) come from the ``ProductBatch``; the simulator,
    trainer, DP and heuristics use nothing else."""

    name: str                  # the registry key (``pipeline.core.problems.PROBLEMS``)
    actions: tuple[str, ...]   # names of the action vector's entries; the first is the order
    discrete: bool             # whole units: evaluation rounds the actions
    min_lead_time: int         # a class constant, or a property when a parameter sets it

    def state_width(self, max_lead_time: int) -> int:
        """Entries of the state vector for products with lead times up to ``max_lead_time``."""
        ...

    def state_names(self, width: int) -> list[str]:
        """The name of each of the ``width`` state entries."""
        ...

    def initial_state(self, batch: ProductBatch, width: int) -> Tensor:
        """The state [B, width] a rollout starts from."""
        ...

    def setup(self, batch: ProductBatch, width: int) -> Any:
        """Per-rollout constants, computed once and passed to every ``step``."""
        ...

    def step(self, state: Tensor, action: Tensor, demand: Tensor, batch: ProductBatch, setup: Any) -> Step:
        """One period: ``state`` [B, W], ``action`` [B, A], ``demand`` [B]."""
        ...

    def inventory_position(self, state: Tensor) -> Tensor:
        """What a base-stock policy orders up to [B]."""
        ...

    def dp_space(self, product: ProductBatch, mean: float, std: float) -> StateSpace:
        """The finite state grid and action set of the exact DP for one product."""
        ...

    def claimed_properties(self, width: int) -> list[Property]:
        """The structural properties the literature claims for the optimal policy."""
        ...

    def default_properties(self, width: int) -> list[Property]:
        """What the structure penalty enforces by default: the claimed properties the exact
        DP confirmed (``ProblemBase``: all of them)."""
        ...


@runtime_checkable
class Policy(Protocol):
    """Anything the simulator rolls (``pipeline.core.rollout.rollout``): the network and
    every heuristic alike. ``prepare`` runs once per rollout and returns what ``act`` needs
    every period (levels, a table, features); ``act`` returns the actions [B, A] (or [B]
    for a single action)."""

    def prepare(self, batch: ProductBatch, start: int, horizon: int) -> Any:
        ...

    def act(self, context: Any, t: int, state: Tensor) -> Tensor:
        ...
