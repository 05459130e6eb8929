"""The fast path: allocate the current of one interval in microseconds, without an optimiser.

:func:`allocate` shares one period's capacity among the sessions plugged in, over every safety row
of the problem (per node and site phase in A, per node in kW, the site import under the grid limit
and demand-response caps — all as rows ``G[:, period] @ r <= h`` with ``G ≥ 0``):

- ``policy="fair"``: weighted max-min fair progressive filling (water-filling), weights = session
  priority. Caps: the session's maximum current and the energy it still wants. Minimum current
  (IEC 61851-1: below ~6 A a vehicle does not charge): sessions get their minimum in order of
  priority (then earliest departure) while it fits; one that cannot is paused at 0 and its share
  goes to the others. Discrete steps (EVSE ``allowed_currents``): rounded down to the allowed set,
  the freed capacity filled again by the others.
- ``policy="edf"`` (earliest departure first) and ``"llf"`` (least laxity first: time left minus
  time needed at full current): sorted policies on the same rows; in order, each session takes all
  it can.

Values are on the 0.1 A grid OCPP carries (``limit`` is ``multipleOf 0.1``), rounded down, and
every safety row holds on them exactly (current rows in integer deci-amps).

:func:`allocate_horizon` runs it period by period, tracking energy delivered, and is what
``solve(method="fast")`` and the solver fallback use.

The kernels (``loadopt.fast._kernels``) are compiled with ``numba.njit(cache=True)`` when numba is
installed; with numba missing or ``LOADOPT_DISABLE_NUMBA=1`` the same source runs as plain
Python/numpy and gives identical results (see :data:`NUMBA`).
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Literal

import numpy as np

from ..errors import InputError
from ..problem import Problem
from . import _kernels
from ._prepared import Prepared, prepared

Policy = Literal["fair", "edf", "llf"]
POLICIES: dict[str, int] = {
    "fair": _kernels.POLICY_FAIR,
    "edf": _kernels.POLICY_EDF,
    "llf": _kernels.POLICY_LLF,
}

#: True when the kernels run compiled by numba.
NUMBA: bool = _kernels.NUMBA

__all__ = ["NUMBA", "POLICIES", "allocate", "allocate_horizon", "pure_kernels"]

_PURE: ModuleType | None = None


def pure_kernels() -> ModuleType:
    """A second copy of the kernels that never uses numba (the pure path), for comparison.

    Returns
    -------
    module
        The kernels module, loaded without numba (the same module when numba is off).
    """
    global _PURE
    if not _kernels.NUMBA:
        return _kernels
    if _PURE is None:
        spec = importlib.util.spec_from_file_location(
            "loadopt.fast._kernels_pure", _kernels.__file__
        )
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        mod.__dict__["_FORCE_PURE"] = True
        spec.loader.exec_module(mod)
        _PURE = mod
    return _PURE


def _policy_code(policy: str) -> int:
    try:
        return POLICIES[policy]
    except KeyError:
        raise InputError(
            f"unknown fast-path policy {policy!r}; use one of {', '.join(POLICIES)}"
        ) from None


def _energy(problem: Problem, energy_left_kwh: np.ndarray | None) -> np.ndarray:
    if energy_left_kwh is None:
        return np.ascontiguousarray(problem.session_energy_kwh, dtype=np.float64)
    e = np.ascontiguousarray(energy_left_kwh, dtype=np.float64)
    if e.shape != (problem.n_sessions,):
        raise InputError(
            f"energy_left_kwh has shape {e.shape}, expected "
            f"({problem.n_sessions},): one value per session"
        )
    bad = np.flatnonzero(np.isnan(e))
    if bad.size:  # NaN compares false everywhere: the kernels would quietly give 0 A
        names = ", ".join(repr(problem.session_ids[k]) for k in bad[:5])
        raise InputError(f"energy_left_kwh is NaN for session(s) {names}")
    return e


def _local(
    pp: Prepared, period: int, code: int, energy: np.ndarray, kernels: ModuleType = _kernels
) -> np.ndarray:
    """Deci-amps of the variables of ``period`` (permuted, local order)."""
    v0, v1 = int(pp.vptr[period]), int(pp.vptr[period + 1])
    r0, r1 = int(pp.rptr[period]), int(pp.rptr[period + 1])
    x = np.zeros(v1 - v0)
    if v1 == v0:
        return x
    kernels.allocate_period(
        r0,
        r1 - r0,
        v0,
        v1 - v0,
        pp.indptr,
        pp.indices,
        pp.data,
        pp.cptr,
        pp.cidx,
        pp.cdata,
        pp.cap_fill,
        pp.chk,
        pp.ub_da,
        pp.hi_da,
        pp.lo_da,
        pp.kwh_per_a,
        pp.w,
        pp.sess,
        pp.dep_s,
        pp.kw_per_a,
        pp.aptr,
        pp.avals,
        pp.has_steps,
        pp.fair_order,
        pp.edf_order,
        pp.start_order,
        pp.cap_order,
        pp.row_slope0,
        pp.row_cnt0,
        pp.row_full0,
        pp.row_floor0,
        energy,
        float(pp.period_start_s[period]),
        code,
        x,
    )
    return x


def allocate(
    problem: Problem,
    period: int,
    policy: Policy = "fair",
    energy_left_kwh: np.ndarray | None = None,
) -> np.ndarray:
    """Current for every session in one period (the fast path's one-interval allocation).

    Parameters
    ----------
    problem
        The compiled problem.
    period
        Period index.
    policy
        ``"fair"`` (weighted max-min fair), ``"edf"`` (earliest departure first) or ``"llf"``
        (least laxity first).
    energy_left_kwh
        ``(S,)`` what each session still wants at the start of the period (kWh); default
        ``problem.session_energy_kwh``.

    Returns
    -------
    numpy.ndarray
        ``(S,)`` A per phase, on the 0.1 A grid, 0 for sessions not plugged in; every safety row
        of the period holds.

    Raises
    ------
    InputError
        A period outside the horizon or an unknown policy.
    """
    T = problem.n_periods
    if not 0 <= period < T:
        raise InputError(f"period {period} is outside the horizon (0..{T - 1})")
    code = _policy_code(policy)
    pp = prepared(problem)
    x = _local(pp, period, code, _energy(problem, energy_left_kwh))
    if _kernels.NUMBA:
        return _kernels.scatter_amps(x, pp.sess, int(pp.vptr[period]), problem.n_sessions)
    out = np.zeros(problem.n_sessions)
    out[pp.sess[pp.vptr[period] : pp.vptr[period + 1]]] = x / 10.0
    return out


def allocate_horizon(
    problem: Problem, policy: Policy = "fair", kernels: ModuleType | None = None
) -> np.ndarray:
    """:func:`allocate` period by period, tracking energy delivered.

    Every safety row holds on the result (it still goes through :func:`loadopt.safety.project`
    in :func:`loadopt.solve`, which leaves a feasible schedule unchanged).

    Parameters
    ----------
    problem
        The compiled problem.
    policy
        As :func:`allocate`.
    kernels
        The kernel module (default: numba's when available; :func:`pure_kernels` for the pure
        Python twin).

    Returns
    -------
    numpy.ndarray
        ``(S, T)`` A per phase.
    """
    code = _policy_code(policy)
    pp = prepared(problem)
    energy = np.array(problem.session_energy_kwh, dtype=np.float64)
    out = np.zeros((problem.n_sessions, problem.n_periods))
    kern = _kernels if kernels is None else kernels
    for t in range(problem.n_periods):
        v0, v1 = int(pp.vptr[t]), int(pp.vptr[t + 1])
        if v1 == v0:
            continue
        x = _local(pp, t, code, energy, kern) / 10.0
        s = pp.sess[v0:v1]
        out[s, t] = x
        energy[s] -= x * pp.kwh_per_a[v0:v1]
    return out
