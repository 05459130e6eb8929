"""Fuzz the controller as a state machine: random plug-ins, departures, meter readings (good,
late, early, out of order, above the limit), clock jumps (also backwards), grid signals between
steps, reservations and garbage calls. After every step the schedule, with every vehicle that was
metered above its limit counted at what it draws, must pass the independent checker
(:mod:`tests.fuzz_checker`); every bad call must raise a LoadoptError and leave the loop working.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

import loadopt as lo
from loadopt.controller import Controller
from loadopt.errors import LoadoptError

from .fuzz_checker import Limits
from .fuzz_strategies import GARBAGE, STARTS, instances
from .fuzz_support import FUZZ, explore, fuzz

OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("start"),
            st.integers(0, 5),
            st.integers(0, 20),
            st.integers(1, 10),
            st.sampled_from([1, 3]),
            st.sampled_from([10.0, 16.0, 32.0]),
        ),
        st.tuples(st.just("stop"), st.integers(0, 5)),
        st.tuples(
            st.just("meter"),
            st.integers(0, 5),
            st.integers(-45, 45),
            st.sampled_from(["ok", "over", "under"]),
            st.floats(0, 3),
        ),
        st.tuples(st.just("step"), st.sampled_from([0, 5, 15, 15, 15, 60, -30])),
        st.tuples(st.just("signal"), st.sampled_from([0.0, 3.0, 8.0, 25.0]), st.integers(0, 90)),
        st.tuples(st.just("reserve"), st.integers(0, 5), st.sampled_from([0.0, 6.0, 16.0, None])),
        st.tuples(st.just("garbage"), st.integers(0, 6), st.sampled_from(GARBAGE)),
    ),
    min_size=1,
    max_size=14,
)


def _utc_plus(t: datetime, minutes: float) -> datetime:
    return (t.astimezone(UTC) + timedelta(minutes=minutes)).astimezone(t.tzinfo)


@explore
@fuzz(40)
@given(
    instances(max_evses=4, max_sessions=0, max_periods=1),
    OPS,
    st.sampled_from(STARTS),
    st.sampled_from(["lp", "fast"]),
)
def test_fuzz_controller_state_machine(inst, ops, start, planner):
    site = inst[0]
    c = Controller(
        site, step_s=900, n_periods=6, signals=inst[3], planner=planner, time_limit_s=5.0
    )
    now = start
    n = 0
    over: dict[str, tuple[float, float, float]] = {}  # EVSE -> what its car really draws
    manual: dict[str, tuple[float, float, float]] = {}  # EVSE -> reserved by hand
    last_step: datetime | None = None

    def garbage_call(k, g):
        calls = [
            lambda: c.meter(g, now, energy_kwh=1.0),
            lambda: c.meter(next(iter(c.sessions), "x"), g, energy_kwh=1.0),
            lambda: c.meter(next(iter(c.sessions), "x"), now, current_a=g),
            lambda: c.step(g),
            lambda: c.start_session(g),
            lambda: c.new_session("g", site.evses[0].id, g),
            lambda: c.on_signal(g, now),
        ]
        calls[k]()

    def check(sched):
        reserved = {**manual, **over}
        lim = Limits(site, sched.problem.sessions, sched.problem.horizon, c.signals)
        bad = lim.breaches(sched.current, sched.problem.session_ids, reserved=reserved)
        FUZZ.example("controller", violations=len(bad))
        assert bad == [], bad[:5]

    try:
        for op in ops:
            if op[0] == "start":
                e = site.evses[op[1] % len(site.evses)]
                if e.id in c._busy:
                    continue
                n += 1
                arrival = _utc_plus(now, -op[2])
                s = lo.Session(
                    id=f"s{n}",
                    evse=e.id,
                    arrival=arrival,
                    departure=_utc_plus(arrival, 60 * op[3]),
                    energy_kwh=30.0,
                    phases=op[4],
                    max_current=op[5],
                )
                c.start_session(s)
            elif op[0] == "stop":
                if c.sessions:
                    sid = sorted(c.sessions)[op[1] % len(c.sessions)]
                    evse = c.sessions[sid].evse
                    c.stop_session(sid, now)
                    over.pop(evse, None)
            elif op[0] == "meter":
                if not c.sessions or last_step is None:
                    continue
                sid = sorted(c.sessions)[op[1] % len(c.sessions)]
                st_ = c._state[sid]
                e = site.evse(st_.session.evse)
                lim_a = st_.last_limit_a or 0.0
                if op[3] == "over":
                    amps = min(lim_a + c.overdraw_tolerance_a + 0.5 + op[4], e.max_current)
                    if amps <= lim_a + c.overdraw_tolerance_a:
                        continue
                else:
                    amps = lim_a if op[3] == "ok" else max(lim_a - op[4], 0.0)
                at = _utc_plus(now, op[2])
                n_ph = min(e.phases, st_.session.phases)
                lines = tuple(amps if j < n_ph else 0.0 for j in range(3))
                kwh = (st_.read_kwh or 0.0) + op[4]
                applied = c.meter(sid, at, energy_kwh=kwh, current_a=amps)
                # the car really draws this from now on only if the controller could know it:
                # a reading it applied, taken after the limit it answers
                if applied and at.astimezone(UTC) > last_step.astimezone(UTC):
                    if op[3] == "over":
                        over[e.id] = lines
                    else:
                        over.pop(e.id, None)
                elif op[3] == "over":  # a car the controller cannot see: do not let it overdraw
                    continue
                if at.astimezone(UTC) > now.astimezone(UTC):
                    now = at
            elif op[0] == "step":
                now = _utc_plus(now, op[1])
                sched = c.step(now)
                last_step = now
                check(sched)
            elif op[0] == "signal":
                g = lo.GridSignal(
                    id=f"dr{op[2] % 3}",
                    start=now,
                    end=_utc_plus(now, op[2] + 1),
                    import_cap_kw=op[1],
                )
                sched = c.on_signal(g, now)
                last_step = now
                check(sched)
            elif op[0] == "reserve":
                e = site.evses[op[1] % len(site.evses)]
                if op[2] is None:
                    c.release(e.id)
                    manual.pop(e.id, None)
                elif e.id not in over:  # an overdrawing car's reservation is the controller's
                    c.reserve(e.id, op[2])
                    manual[e.id] = (op[2],) * 3
            else:
                try:
                    garbage_call(op[1], op[2])
                except LoadoptError:
                    FUZZ.example("bad-input")
                else:
                    if op[1] == 3:  # step(garbage) may be a valid datetime only if it is one
                        assert isinstance(op[2], datetime) and op[2].tzinfo is not None
                        last_step = op[2]
                        now = op[2]
        # the loop is never poisoned: one more step works and is safe
        now = _utc_plus(now, 15)
        check(c.step(now))
    except Exception:
        FUZZ.crash("controller")
        raise
