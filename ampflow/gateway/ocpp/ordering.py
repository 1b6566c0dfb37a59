"""Safe ordering of limit changes: the bookkeeping, free of I/O so it can be property-tested.

Every connector has a *bound*: the highest limit its station may be enforcing right now, as far as
the central system can know. A limit the station accepted is in force; while a profile is in
flight the station may or may not have applied it yet, so the bound is the higher of the two; an
answer that never came (timeout, lost connection) leaves that higher value in place until a later
answer settles it; a rejected profile changes nothing.

The rule that keeps a site within its capacity while profiles are in flight:

* a **decrease** (target below the bound) may be sent at any time: it never raises a bound;
* an **increase** of one connector may be sent only when *every other connector of the site* has a
  bound at or below its target.

The targets come from one allocation that satisfies every capacity row ``A @ p <= b`` (``A`` is
non-negative), so when every bound is at or below its target, ``A @ bound <= A @ target <= b``: the
site holds at every instant, whatever is lost, delayed or rejected. A connector whose target is not
known yet blocks increases at its site while its bound is above zero.

Examples
--------
Two connectors share a site; the allocator moves 4 kW from ``a`` to ``b``:

>>> ledger = Ledger()
>>> _ = ledger.add(1, "site", bound_kw=10.0), ledger.add(2, "site", bound_kw=6.0)
>>> ledger.set_target(1, 6.0); ledger.set_target(2, 10.0)
>>> ledger.due("site")           # only the decrease may go out
[(1, 6.0)]
>>> ledger.due("site")           # the increase waits for the decrease to be answered
[]
>>> ledger.resolve(1, Answer.ACCEPTED)
>>> ledger.due("site")
[(2, 10.0)]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["EPS_KW", "Answer", "Ledger", "Slot"]

EPS_KW = 1e-6  # limits closer than this are equal [kW]


class Answer(StrEnum):
    """How a sent limit ended."""

    ACCEPTED = "accepted"  # the station applies it
    REJECTED = "rejected"  # the station keeps what it had
    LOST = "lost"  # no answer: it may or may not apply it (it is sent again)


@dataclass
class Slot:
    """One connector's bookkeeping (all values in kW)."""

    site: str
    accepted_kw: float
    target_kw: float | None = None
    inflight_kw: float | None = None
    held: bool = False  # not to be sent to (station offline or flagged)
    stale: bool = False  # to be sent again even if unchanged (a reconnect, a reboot)

    @property
    def bound_kw(self) -> float:
        """The highest limit the station may be enforcing now [kW]."""
        if self.inflight_kw is None:
            return self.accepted_kw
        return max(self.accepted_kw, self.inflight_kw)

    def settled(self) -> bool:
        """Whether this connector can no longer stand in the way of an increase elsewhere."""
        if self.target_kw is None:
            return self.bound_kw <= EPS_KW
        return self.bound_kw <= self.target_kw + EPS_KW


class Ledger:
    """Bounds and targets per connector, grouped by site; see the module notes.

    Each site keeps the set of its connectors that are not settled and the set that may need a
    send, updated on every change, so :meth:`due` costs what changed, not the size of the site.
    Change slots only through these methods.
    """

    def __init__(self) -> None:
        self.slots: dict[int, Slot] = {}
        self._sites: dict[str, set[int]] = {}
        self._unsettled: dict[str, set[int]] = {}
        self._pending: dict[str, set[int]] = {}

    def add(self, key: int, site: str, *, bound_kw: float) -> Slot:
        """Track a connector with an initial bound (its maximum when nothing is known)."""
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = Slot(site, bound_kw)
            self._sites.setdefault(site, set()).add(key)
            self._unsettled.setdefault(site, set())
            self._pending.setdefault(site, set())
            self._touch(key)
        return slot

    def _touch(self, key: int) -> None:
        s = self.slots[key]
        unsettled, pending = self._unsettled[s.site], self._pending[s.site]
        if s.settled():
            unsettled.discard(key)
        else:
            unsettled.add(key)
        t = s.target_kw
        if t is not None and (s.stale or abs(t - s.accepted_kw) > EPS_KW):
            pending.add(key)
        else:
            pending.discard(key)

    def site_slots(self, site: str) -> Iterator[tuple[int, Slot]]:
        for key in sorted(self._sites.get(site, ())):
            yield key, self.slots[key]

    def set_target(self, key: int, kw: float) -> None:
        """The limit the allocator wants for this connector now [kW]."""
        self.slots[key].target_kw = kw
        self._touch(key)

    def set_bound(self, key: int, kw: float) -> None:
        """What the station enforces became known another way (a transaction ended, a default
        profile was accepted, a composite schedule was read); an in-flight value still counts."""
        self.slots[key].accepted_kw = kw
        self._touch(key)

    def raise_bound(self, key: int, kw: float) -> None:
        """The station may be enforcing ``kw`` or less (a reboot, a lost profile)."""
        slot = self.slots[key]
        slot.accepted_kw = max(slot.accepted_kw, kw)
        self._touch(key)

    def refresh(self, key: int) -> None:
        """Send this connector's target again even if the station should have it already."""
        self.slots[key].stale = True
        self._touch(key)

    def keep(self, key: int) -> None:
        """Leave the station with what it enforces: the target drops to the bound if above it,
        and nothing is re-sent (a target that was only bookkeeping, such as a fixed load,
        must not reach the station as a limit)."""
        slot = self.slots[key]
        if slot.target_kw is not None:
            slot.target_kw = min(slot.target_kw, slot.accepted_kw)
        slot.stale = False
        self._touch(key)

    def hold(self, key: int, held: bool) -> None:
        """Whether nothing may be sent to this connector (offline, flagged, no transaction)."""
        self.slots[key].held = held

    def due(self, site: str) -> list[tuple[int, float]]:
        """The sends allowed now at ``site``, marked in flight: every decrease (and every
        refresh that is not an increase), and the increases when every other connector of the
        site is settled."""
        unsettled = self._unsettled.get(site, set())
        out: list[tuple[int, float]] = []
        for key in sorted(self._pending.get(site, ())):
            s = self.slots[key]
            if s.inflight_kw is not None or s.held or s.target_kw is None:
                continue
            if (
                s.target_kw < s.accepted_kw - EPS_KW
                or (s.stale and s.target_kw <= s.accepted_kw + EPS_KW)
                or (s.target_kw > s.accepted_kw + EPS_KW and unsettled <= {key})
            ):
                out.append((key, s.target_kw))
        for key, kw in out:
            self.slots[key].inflight_kw = kw
            self.slots[key].stale = False
            self._touch(key)
        return sorted(out, key=lambda x: x[1] - self.slots[x[0]].accepted_kw)

    def resolve(self, key: int, answer: Answer) -> None:
        """The answer to the limit in flight for ``key``."""
        slot = self.slots[key]
        if slot.inflight_kw is None:
            return
        if answer is Answer.ACCEPTED:
            slot.accepted_kw = slot.inflight_kw
        elif answer is Answer.LOST:
            # It may or may not apply: keep the higher bound, and send the target again (that
            # is never an increase now), so a station that missed it does not stay below.
            slot.accepted_kw = max(slot.accepted_kw, slot.inflight_kw)
            slot.stale = True
        slot.inflight_kw = None
        self._touch(key)

    def site_bound_kw(self, site: str) -> float:
        """Sum of the bounds of a site's connectors [kW]."""
        return sum(s.bound_kw for _, s in self.site_slots(site))
