"""Safe ordering, simulated: random allocations, cap changes, and a network that delays, loses
(requests and answers) and rejects profiles. The ledger's bound always covers what each station
really enforces, and the sum of the stations' limits never exceeds the site cap at any instant
(nor grows while above a cap that was just lowered)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampflow.gateway.ocpp.ordering import Answer, Ledger

EPS = 1e-9
SITE = "site"


@dataclass
class Msg:
    key: int
    kw: float
    state: str = "sent"  # sent -> applied | rejected | dropped


class Network:
    """Stations enforcing limits, reached through per-station FIFO links that misbehave."""

    def __init__(self, targets: list[float]) -> None:
        self.ledger = Ledger()
        self.actual = list(targets)  # what each station enforces
        self.links: dict[int, deque[Msg]] = {k: deque() for k in range(len(targets))}
        self.awaiting: dict[int, Msg] = {}
        for k, kw in enumerate(targets):
            self.ledger.add(k, SITE, bound_kw=kw)
            self.ledger.set_target(k, kw)

    def dispatch(self) -> None:
        for key, kw in self.ledger.due(SITE):
            msg = Msg(key, kw)
            self.links[key].append(msg)
            self.awaiting[key] = msg

    def decide(self, targets: list[float]) -> None:
        for k, kw in enumerate(targets):
            self.ledger.set_target(k, kw)
        self.dispatch()

    def station_processes(self, key: int, outcome: str) -> None:
        """The station reads the oldest request on its link: applies, rejects or loses it."""
        if not self.links[key]:
            return
        msg = self.links[key].popleft()
        msg.state = outcome
        if outcome == "applied":
            self.actual[key] = msg.kw

    def answer_arrives(self, key: int, lost: bool) -> None:
        """The answer to the call in flight comes back (or times out)."""
        msg = self.awaiting.pop(key, None)
        if msg is None:
            return
        if lost or msg.state in ("sent", "dropped"):
            answer = Answer.LOST  # no answer in time; a late request may still be applied
        else:
            answer = Answer.ACCEPTED if msg.state == "applied" else Answer.REJECTED
        self.ledger.resolve(key, answer)
        self.dispatch()

    def bounds(self) -> list[float]:
        return [self.ledger.slots[k].bound_kw for k in range(len(self.actual))]


def _allocation(draw: st.DrawFn, n: int, cap: float) -> list[float]:
    weights = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
    fill = draw(st.floats(0.0, 1.0))
    total = sum(weights)
    if total == 0:
        return [0.0] * n
    return [cap * fill * w / total for w in weights]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_site_cap_holds_with_lost_delayed_and_rejected_calls(data: st.DataObject) -> None:
    draw = data.draw
    n = draw(st.integers(2, 6))
    cap = draw(st.floats(5.0, 100.0))
    net = Network(_allocation(draw, n, cap))
    dropped_at_some_point = False
    for _ in range(draw(st.integers(1, 80))):
        bound_sum = sum(net.bounds())
        action = draw(st.sampled_from(["decide", "cap", "process", "answer", "answer"]))
        key = draw(st.integers(0, n - 1))
        if action == "decide":
            net.decide(_allocation(draw, n, cap))
        elif action == "cap":
            new_cap = draw(st.floats(5.0, 100.0))
            dropped_at_some_point |= new_cap < sum(net.bounds())
            cap = new_cap
            net.decide(_allocation(draw, n, cap))
        elif action == "process":
            net.station_processes(
                key, draw(st.sampled_from(["applied", "applied", "rejected", "dropped"]))
            )
        else:
            net.answer_arrives(key, lost=draw(st.booleans()))
        bounds = net.bounds()
        # What a station enforces is always covered by the ledger's bound ...
        assert all(a <= b + EPS for a, b in zip(net.actual, bounds, strict=True))
        # ... the bounds never grow above the cap ...
        assert sum(bounds) <= max(cap, bound_sum) + 1e-6
        # ... so the stations' sum never exceeds the cap. (After the cap drops below what is in
        # force it stays above until the decreases land; the bounds above show it never grows.)
        if not dropped_at_some_point:
            assert sum(net.actual) <= cap + 1e-6
    # Liveness: once the network behaves, every station ends at its target, within the cap.
    for _ in range(4 * n + 4):
        for key in range(n):
            while net.links[key]:
                net.station_processes(key, "applied")
            net.answer_arrives(key, lost=False)
    targets = [net.ledger.slots[k].target_kw for k in range(n)]
    assert net.actual == pytest.approx(targets, abs=1e-6)  # the ledger's resolution
    assert sum(net.actual) <= cap + 1e-6


def test_an_increase_waits_for_every_decrease_of_its_site() -> None:
    ledger = Ledger()
    for key, kw in enumerate([10.0, 10.0, 0.0]):
        ledger.add(key, SITE, bound_kw=kw)
    ledger.add(9, "other", bound_kw=50.0)  # another site never blocks this one
    for key, kw in enumerate([4.0, 6.0, 10.0]):
        ledger.set_target(key, kw)
    assert ledger.due(SITE) == [(0, 4.0), (1, 6.0)]
    ledger.resolve(0, Answer.ACCEPTED)
    assert ledger.due(SITE) == []  # connector 1 is still above its target
    ledger.resolve(1, Answer.REJECTED)
    assert ledger.due(SITE) == [(1, 6.0)]  # rejected: tried again, the increase still waits
    ledger.resolve(1, Answer.LOST)
    assert ledger.slots[1].bound_kw == 10.0  # a lost decrease may not have been applied
    assert ledger.due(SITE) == [(1, 6.0)]
    ledger.resolve(1, Answer.ACCEPTED)
    assert ledger.due(SITE) == [(2, 10.0)]
    assert ledger.site_bound_kw(SITE) == pytest.approx(20.0)


def test_an_unknown_target_blocks_increases_while_its_bound_is_above_zero() -> None:
    ledger = Ledger()
    ledger.add(1, SITE, bound_kw=22.0)  # a connector nobody decided for yet
    ledger.add(2, SITE, bound_kw=0.0)
    ledger.set_target(2, 11.0)
    assert ledger.due(SITE) == []
    ledger.set_bound(1, 0.0)
    assert ledger.due(SITE) == [(2, 11.0)]


def test_a_lost_increase_keeps_the_higher_bound() -> None:
    ledger = Ledger()
    ledger.add(1, SITE, bound_kw=5.0)
    ledger.set_target(1, 9.0)
    assert ledger.due(SITE) == [(1, 9.0)]
    assert ledger.slots[1].bound_kw == 9.0  # in flight: it may already apply
    ledger.resolve(1, Answer.LOST)
    assert ledger.slots[1].bound_kw == 9.0
    assert ledger.due(SITE) == [(1, 9.0)]  # sent again, in case it was not applied
    ledger.resolve(1, Answer.ACCEPTED)
    assert ledger.due(SITE) == []


def test_keep_never_sends_a_bookkeeping_target() -> None:
    """A fixed load the allocator assumed (22 kW for a station it could not control) is not a
    limit: once the station is controllable again nothing is sent until the next decision, and
    a refresh pending from its reconnect is dropped."""
    ledger = Ledger()
    ledger.add(1, SITE, bound_kw=11.0)  # booting: what it enforces is unknown
    ledger.add(2, SITE, bound_kw=0.0)
    ledger.set_target(1, 22.0)  # measured above its bound: the fixed load is higher still
    ledger.refresh(1)
    ledger.keep(1)
    assert ledger.slots[1].target_kw == 11.0
    assert ledger.due(SITE) == []
    ledger.set_target(1, 4.0)  # the next decision: a share of the site
    ledger.set_target(2, 6.0)
    assert ledger.due(SITE) == [(1, 4.0)]
