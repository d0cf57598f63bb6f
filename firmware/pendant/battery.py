# Battery level from the ADC: a single-cell LiPo (4.2 V full) behind a 1:1 divider on an ADC pin (hal.py).
#
# The resident is told (LOW_BATTERY pattern) and the hub is told (a battery_low event) once per discharge: the
# "sent" flag lives in the flash store and is cleared only when the level climbs back above _RECHARGED_PCT (the
# battery was charged or replaced). Thresholds are ours, not clinical ones: 20 % leaves about a week of standby.

from micropython import const

LOW_PCT = const(20)
_RECHARGED_PCT = const(30)  # hysteresis: a sagging battery that reads 19, 21, 19 % reports once

# Open-circuit LiPo discharge curve at room temperature, (millivolts, percent), highest first.
_CURVE = (
    (4200, 100),
    (4100, 90),
    (3970, 75),
    (3870, 60),
    (3800, 45),
    (3750, 30),
    (3700, 20),
    (3620, 10),
    (3500, 5),
    (3300, 0),
)


def percent(mv: int) -> int:
    """Battery percentage 0..100 for a cell voltage in millivolts (linear between the curve's points)."""
    if mv >= _CURVE[0][0]:
        return 100
    for i in range(1, len(_CURVE)):
        v1, p1 = _CURVE[i]
        if mv >= v1:
            v0, p0 = _CURVE[i - 1]
            return p1 + (mv - v1) * (p0 - p1) // (v0 - v1)
    return 0


def assess(pct: int, sent: bool) -> tuple[bool, bool]:
    """(report now, sent flag to store) for a reading `pct` given whether low battery was already reported."""
    if pct < LOW_PCT:
        return (not sent, True)
    if pct >= _RECHARGED_PCT:
        return (False, False)
    return (False, sent)
