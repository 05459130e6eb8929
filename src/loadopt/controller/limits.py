"""Limit and signal changes between steps on a :class:`~loadopt.controller.Controller`: new
signals, a node's rating, a battery's metered state of charge (each applied from the next step
on, nothing changed on an error).
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import InputError
from ..signals import Signals
from ..site import Battery
from .state import _KEEP, _ControllerState


class _Limits(_ControllerState):
    """Signals, node ratings and battery states changed between steps."""

    def set_signals(self, signals: Signals) -> None:
        """New prices, base load, PV, grid limit or grid signals from now on (replacing the old).

        Parameters
        ----------
        signals
            The new :class:`Signals`.

        Raises
        ------
        InputError
            Not a :class:`Signals`.
        """
        if not isinstance(signals, Signals):
            raise InputError(f"set_signals needs a Signals object, got {type(signals).__name__}")
        self.signals = signals
        self._events.append("signals replaced")

    def set_node_limit(
        self,
        node_id: str,
        *,
        max_current: Any = _KEEP,
        max_power_kw: Any = _KEEP,
        primary_max_current: Any = _KEEP,
    ) -> None:
        """Change a node's rating from the next step on, without rebuilding the site or the
        controller (a grid operator lowering a feeder, a transformer derated on a hot day).

        Arguments not given keep their value; ``None`` means no limit.

        Parameters
        ----------
        node_id
            The node.
        max_current
            A per phase: one value or three (R, S, T).
        max_power_kw
            kW.
        primary_max_current
            A on a delta/wye transformer's primary lines.

        Raises
        ------
        InputError
            An unknown node, a primary limit on a node that is not a transformer, or a bad value
            (and nothing changes).
        """
        from ..site import DeltaWye, Node

        try:
            k = next(i for i, n in enumerate(self.site.nodes) if n.id == node_id)
        except StopIteration:
            raise InputError(
                f"set_node_limit: unknown node {node_id!r} on site {self.site.id!r}"
            ) from None
        node = self.site.nodes[k]
        upd = node.model_dump()
        if max_current is not _KEEP:
            upd["max_current"] = max_current
        if max_power_kw is not _KEEP:
            upd["max_power_kw"] = max_power_kw
        if primary_max_current is not _KEEP:
            if node.delta_wye is None:
                raise InputError(f"set_node_limit: node {node_id!r} is not a delta/wye transformer")
            upd["delta_wye"] = DeltaWye(
                turns_ratio=node.delta_wye.turns_ratio, primary_max_current=primary_max_current
            )
        try:
            new = Node.model_validate(upd)
        except ValueError as exc:
            raise InputError(f"set_node_limit: node {node_id!r}: {exc}") from None
        nodes = (*self.site.nodes[:k], new, *self.site.nodes[k + 1 :])
        # the tree, the EVSEs and the ids are unchanged: no need to validate the site again
        self.site = self.site.model_copy(update={"nodes": nodes})
        self._events.append(f"node {node_id!r} limits changed")

    def set_battery_soc(self, battery_id: str, soc: float) -> None:
        """A stationary battery's metered state of charge: the next plan starts from it.

        Parameters
        ----------
        battery_id
            The battery.
        soc
            State of charge, fraction of its capacity in [0, 1].

        Raises
        ------
        InputError
            An unknown battery or a value that is not a finite number in [0, 1] (and nothing
            changes).
        """
        try:
            k = next(i for i, b in enumerate(self.site.batteries) if b.id == battery_id)
        except StopIteration:
            raise InputError(
                f"set_battery_soc: unknown battery {battery_id!r} on site {self.site.id!r}"
            ) from None
        try:
            new = Battery.model_validate({**self.site.batteries[k].model_dump(), "soc": soc})
        except ValueError as exc:
            raise InputError(f"set_battery_soc: battery {battery_id!r}: {exc}") from None
        if not math.isfinite(new.soc):
            raise InputError(f"set_battery_soc: battery {battery_id!r}: soc {soc} is not finite")
        bats = (*self.site.batteries[:k], new, *self.site.batteries[k + 1 :])
        self.site = self.site.model_copy(update={"batteries": bats})
