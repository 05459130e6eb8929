"""compile_problem's shortcuts give the problem of its general path, field by field.

A site without reservations, batteries or wiring skips the work those need, and the per-site
tree is kept on the site across calls; these tests compare every array of the compiled
:class:`~loadopt.problem.Problem` against the general path (explicit zero reservations, a
fresh site with no cache) on a congested synthetic site, a line-to-line ACN site and a V2G site
with a battery, and check the cache follows a ``model_copy`` with new EVSEs or nodes.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pytest
import scipy.sparse as sp

from loadopt import Horizon, Signals
from loadopt.acn import acn_scenario
from loadopt.compile import compile_problem
from loadopt.site import Site
from loadopt.synthetic import benchmark_scenario, v2g_scenario


def _assert_same(a, b, path: str = "problem") -> None:
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if isinstance(x, Site | Horizon | Signals) or f.name in ("sessions", "objective"):
                assert x == y, f"{path}.{f.name}"
                continue
            _assert_same(x, y, f"{path}.{f.name}")
    elif sp.issparse(a):
        assert sp.issparse(b) and a.format == b.format, path
        assert a.shape == b.shape and a.dtype == b.dtype, path
        assert (a != b).nnz == 0, path
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), path
    else:
        assert a == b, path


def _scenarios():
    yield "congested", benchmark_scenario(120, n_periods=48, seed=5)
    yield "acn-line-to-line", acn_scenario("2019-05-07", step_s=900)
    yield "v2g-battery", v2g_scenario(40, n_periods=48, seed=2)[0]


@pytest.mark.parametrize(
    "name,sc", list(_scenarios()), ids=lambda x: x if isinstance(x, str) else ""
)
def test_shortcuts_equal_general_path(name, sc):
    site, hz = sc.site, sc.horizon
    fresh = Site.model_validate(site.model_dump())  # no tree cached on it
    zeros = np.zeros((len(site.evses), 3, hz.n_periods))
    general = compile_problem(fresh, sc.sessions, hz, sc.signals, sc.objective, reserved_a=zeros)
    first = compile_problem(site, sc.sessions, hz, sc.signals, sc.objective)
    again = compile_problem(site, sc.sessions, hz, sc.signals, sc.objective)  # tree cached
    assert general.n_vars > 0 and general.G.shape[0] > 0
    assert site == fresh  # the tree kept on the site does not enter model equality
    _assert_same(general, first)
    _assert_same(general, again)


def test_site_tree_follows_model_copy():
    sc = benchmark_scenario(30, n_periods=16, seed=1)
    site = sc.site
    compile_problem(site, sc.sessions, sc.horizon, sc.signals)  # caches the tree on ``site``
    # the same site with its EVSEs in reverse order and its nodes reversed: ids map anew
    other = site.model_copy(
        update={"evses": tuple(reversed(site.evses)), "nodes": tuple(reversed(site.nodes))}
    )
    p = compile_problem(other, sc.sessions, sc.horizon, sc.signals)
    want = compile_problem(
        Site.model_validate(other.model_dump()), sc.sessions, sc.horizon, sc.signals
    )
    _assert_same(want, p)
    assert p.evse_ids == tuple(e.id for e in other.evses)
    assert p.node_ids == tuple(n.id for n in other.nodes)
    # and the original site still compiles as before
    _assert_same(
        compile_problem(
            Site.model_validate(site.model_dump()), sc.sessions, sc.horizon, sc.signals
        ),
        compile_problem(site, sc.sessions, sc.horizon, sc.signals),
    )


def test_empty_site_sessions():
    sc = benchmark_scenario(10, n_periods=8, seed=3)
    hz = Horizon(start=datetime(2030, 1, 1, tzinfo=UTC), step_s=900, n_periods=8)
    p = compile_problem(sc.site, (), hz)
    assert p.n_vars == 0 and p.G.shape[1] == 0 and p.evse_ids == tuple(e.id for e in sc.site.evses)
