"""Conversions between current and power at the edges of the engine.

The engine works in kW; stations and site managers speak in A per phase. One pair of pure
functions converts between them, for any voltage, number of phases and power factor.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["a_from_kw", "kw_from_a"]


def kw_from_a(
    i_a: ArrayLike,
    *,
    voltage_v: ArrayLike = 230.0,
    phases: ArrayLike = 3,
    power_factor: ArrayLike = 1.0,
) -> NDArray[np.float64]:
    """Power drawn by a current on each of ``phases`` conductors.

    Parameters
    ----------
    i_a : array_like
        Current per phase [A].
    voltage_v : array_like, default 230
        Voltage across the load [V]: line-to-neutral for star-connected loads, line-to-line for a
        single-phase load connected between two lines (as in North American 208 V sites).
    phases : array_like, default 3
        Number of phases carrying ``i_a`` (1, 2 or 3).
    power_factor : array_like, default 1
        Power factor, in (0, 1].

    Returns
    -------
    numpy.ndarray
        Active power [kW].

    Examples
    --------
    >>> float(kw_from_a(16, voltage_v=230, phases=3))
    11.04
    >>> float(kw_from_a(32, voltage_v=208, phases=1))
    6.656
    """
    return np.asarray(i_a, dtype=np.float64) * _w_per_a(voltage_v, phases, power_factor) / 1000.0


def a_from_kw(
    p_kw: ArrayLike,
    *,
    voltage_v: ArrayLike = 230.0,
    phases: ArrayLike = 3,
    power_factor: ArrayLike = 1.0,
) -> NDArray[np.float64]:
    """Current per phase that carries ``p_kw``; the inverse of :func:`kw_from_a`.

    Parameters
    ----------
    p_kw : array_like
        Active power [kW].
    voltage_v, phases, power_factor : array_like
        As in :func:`kw_from_a`.

    Returns
    -------
    numpy.ndarray
        Current per phase [A].

    Examples
    --------
    >>> float(a_from_kw(11.04, voltage_v=230, phases=3))
    16.0
    """
    return np.asarray(p_kw, dtype=np.float64) * 1000.0 / _w_per_a(voltage_v, phases, power_factor)


def _w_per_a(
    voltage_v: ArrayLike, phases: ArrayLike, power_factor: ArrayLike
) -> NDArray[np.float64]:
    v = np.asarray(voltage_v, dtype=np.float64)
    n = np.asarray(phases, dtype=np.float64)
    pf = np.asarray(power_factor, dtype=np.float64)
    if np.any(v <= 0) or np.any(n <= 0) or np.any((pf <= 0) | (pf > 1)):
        raise ValueError(
            f"voltage_v and phases must be > 0 and power_factor in (0, 1], "
            f"got voltage_v={voltage_v!r}, phases={phases!r}, power_factor={power_factor!r}"
        )
    return v * n * pf
