"""Danger thresholds: the key catalogue, defaults, doctors' profiles, overrides and their validation.

Every value the hub's rules compare against lives in one flat, validated :class:`Thresholds` set keyed by stable
strings. The same keys are used by residents' ``[residents.thresholds]`` tables in the hub config, by the doctor's
profiles below and by the platform's signed threshold-update messages (``docs/protocol.md`` §8), so they never
change meaning. Each key has a fixed unit and a fixed comparison: a doctor changes the number, never the operator.
The catalogue lives in ``protocols/`` so the hub (``gateway.thresholds`` re-exports it) and the platform validate
with the same keys and limits; it imports only the standard library.

The defaults are the "suggested mapping" of ``shared/thresholds.md`` section 8, each traced to its source there.
That mapping is a synthesis for a collector, not a validated alerting policy; the doctor's profile rules.

Tiers: ``notice`` (routine: the doctor sees it at the next review), ``warning`` (someone should look today),
``critical`` (act now: the resident is told help is being called and the alarm re-raises every few minutes).

========================================  =======  =======  ====  =================================================
key                                       unit     default  fires source / reasoning
========================================  =======  =======  ====  =================================================
bp.systolic.notice_high                   mmHg     140      >=    ACC/AHA 2017 Table 6, stage 2 hypertension
bp.systolic.warning_high                  mmHg     160      >=    common practice (thresholds.md §8: no source)
bp.systolic.critical_high                 mmHg     180      >     ACC/AHA 2017 §11.2 hypertensive crisis (>180)
bp.diastolic.notice_high                  mmHg     90       >=    ACC/AHA 2017 Table 6, stage 2 hypertension
bp.diastolic.warning_high                 mmHg     100      >=    common practice (thresholds.md §8: no source)
bp.diastolic.critical_high                mmHg     120      >     ACC/AHA 2017 §11.2 hypertensive crisis (>120)
bp.systolic.warning_low                   mmHg     100      <=    NEWS2 2017: SBP 91-100 scores 2
bp.systolic.critical_low                  mmHg     90       <=    NEWS2 2017: SBP <=90 scores 3 (the maximum)
bp.confirm_delay_s                        s        300      --    rest before re-measuring a crisis reading
bp.confirm_deadline_s                     s        600      --    no re-measurement by then confirms the crisis
glucose.low.notice                        mg/dL    70       <     ADA Standards §6: level 1 hypoglycaemia (<70)
glucose.low.warning                       mg/dL    54       <     ADA level 2 (<54); thresholds.md §8 warning tier
glucose.low.critical                      mg/dL    54       <     ADA level 2 (<54), critical at once (see below)
glucose.high.notice                       mg/dL    180      >     Agiostratidou 2017 / Battelino 2019: level 1
glucose.high.warning                      mg/dL    250      >     same: level 2 (very high)
glucose.high.critical                     mg/dL    600      >=    ADA/EASD 2024 hyperglycaemic crises: HHS (>=600)
glucose.swing.enabled                     0/1      1        --    community programme: swing -> medication review
glucose.swing.percent                     %        30       >     community programme: >30% between readings
glucose.swing.window_s                    s        86400    --    only consecutive readings this close are compared
cgm.low.warning                           mg/dL    70       <     ADA level 1 hypoglycaemia (<70), on a CGM
cgm.low.critical                          mg/dL    54       <     ADA level 2 hypoglycaemia (<54), on a CGM
cgm.high.notice                           mg/dL    180      >     Battelino 2019 CGM hyperglycaemia level 1 (>180)
cgm.high.warning                          mg/dL    250      >     same: level 2 (>250)
spo2.low.notice                           %        95       <=    NEWS2 scale 1: 94-95 scores 1
spo2.low.warning                          %        93       <=    NEWS2 scale 1: 92-93 scores 2; NHS @home <=92
spo2.low.critical                         %        91       <=    NEWS2 scale 1: <=91 scores 3
pulse.low.notice                          bpm      50       <=    NEWS2: 41-50 scores 1
pulse.low.critical                        bpm      40       <=    NEWS2: <=40 scores 3
pulse.high.notice                         bpm      91       >=    NEWS2: 91-110 scores 1
pulse.high.warning                        bpm      111      >=    NEWS2: 111-130 scores 2
pulse.high.critical                       bpm      131      >=    NEWS2: >=131 scores 3
temperature.low.notice                    °C       36.0     <=    NEWS2: 35.1-36.0 scores 1
temperature.low.critical                  °C       35.0     <=    NEWS2: <=35.0 scores 3; hypothermia <35 core
temperature.high.notice                   °C       38.0     >     NEWS2: 38.1-39.0 scores 1
temperature.high.warning                  °C       39.0     >     NEWS2: >=39.1 scores 2
weight.trend.enabled                      0/1      0        --    weight trend rules (heart_failure turns them on)
weight.gain_1d.notice_kg                  kg       1.0      >     telemonitoring convention ">1 kg/day"
weight.gain_3d.warning_kg                 kg       2.0      >     ESC HFA self-care 2021: ">2 kg in 3 days"
battery.meter.notice                      %        20       <=    engineering: time to buy batteries
battery.meter.warning                     %        10       <=    engineering: readings will soon stop
battery.pendant.warning                   %        20       <=    a dead pendant is an unheard call for help
battery.pendant.critical                  %        10       <=    same: change it now
========================================  =======  =======  ====  =================================================

Notes on choices that depart from, or add to, the section 8 mapping:

- Glucose below 54 mg/dL is *critical*, not warning: the resident lives alone and level 2 hypoglycaemia can take
  away the ability to treat it (ADA level 3, "altered mental status requiring assistance", has no glucose
  threshold, so a meter reading can only ever catch it at level 2). ``glucose.low.warning`` keeps the section 8
  tier: it equals the critical level by default (an empty band); a doctor who lowers ``glucose.low.critical``
  opens a warning band between the two.
- A continuous glucose monitor (``cgm.*``, interstitial glucose every 5 minutes) has its own keys: level 1
  hypoglycaemia is a *warning* there (a trend the sensor catches before symptoms, worth a look today), level 2 is
  critical as for a strip; the strip meter's swing rule does not apply (thresholds.md §2 and §8, item 3: "ADA
  hypoglycaemia levels 1 / 2 / 3, and CGM hyperglycaemia levels 1 / 2"). A persisting low raises one alarm, re-raised
  at its tier's pace (``gateway.alarms``), not one per reading.
- NEWS2's SBP 101-110 band (score 1) is left out: it is common in treated elderly hypertensives and would be noise.
- Pulse has no low warning tier and temperature no high critical tier: the sources give none.
- The community programme's "BP > 180/110" trigger is what the ``hypertension`` profile uses for diastolic.
- The SpO2 rules compare the reading as measured; a "fall of >=3%" (BTS) is not a rule here.

Units on the wire differ (thresholds.md: "glucose mg/dL = mmol/L x 18.016; 1 kPa = 7.50062 mmHg;
°F = °C x 9/5 + 32"; scales in lb x 0.453592); the conversion helpers below bring readings into the units above.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "DEFAULTS",
    "PROFILES",
    "SPECS",
    "Cmp",
    "Key",
    "KeySpec",
    "ThresholdError",
    "ThresholdProblem",
    "Thresholds",
    "Tier",
    "check_update",
    "fahrenheit_to_celsius",
    "kpa_to_mmhg",
    "lb_to_kg",
    "mmol_per_l_to_mg_dl",
    "resolve_thresholds",
]

# Conversions round to 1e-6: far below any meter's resolution, and it removes binary floating-point noise that
# would otherwise decide a reading that sits exactly on a threshold.
_ROUND = 6


def mmol_per_l_to_mg_dl(mmol_per_l: float) -> float:
    """Glucose in mmol/L to mg/dL (thresholds.md units line: mg/dL = mmol/L x 18.016)."""
    return round(mmol_per_l * 18.016, _ROUND)


def kpa_to_mmhg(kpa: float) -> float:
    """Pressure in kPa to mmHg (thresholds.md units line: 1 kPa = 7.50062 mmHg)."""
    return round(kpa * 7.50062, _ROUND)


def fahrenheit_to_celsius(fahrenheit: float) -> float:
    """Temperature in °F to °C (inverse of thresholds.md's °F = °C x 9/5 + 32)."""
    return round((fahrenheit - 32.0) * 5.0 / 9.0, _ROUND)


def lb_to_kg(pounds: float) -> float:
    """Weight in lb to kg (thresholds.md §6: x 0.453592)."""
    return round(pounds * 0.453592, _ROUND)


class Tier(enum.IntEnum):
    """How urgent a finding or an alarm is; ordered, so ``max()`` gives the most urgent."""

    INFO = 0  # reported only, never alarmed on (e.g. a reading the device flagged)
    NOTICE = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        """The lowercase name used in records and messages."""
        return self.name.lower()


class Cmp(enum.StrEnum):
    """How a reading is compared with its threshold: the reading fires when ``reading <op> threshold``."""

    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    NONE = "--"  # a parameter (duration, switch), not a level

    def fires(self, reading: float, threshold: float) -> bool:
        """Whether `reading` is beyond `threshold` under this comparison."""
        if self is Cmp.GT:
            return reading > threshold
        if self is Cmp.GE:
            return reading >= threshold
        if self is Cmp.LT:
            return reading < threshold
        if self is Cmp.LE:
            return reading <= threshold
        return False


class Key(enum.StrEnum):
    """Every threshold key; the string values are the stable wire and config names."""

    BP_SYS_NOTICE_HIGH = "bp.systolic.notice_high"
    BP_SYS_WARNING_HIGH = "bp.systolic.warning_high"
    BP_SYS_CRITICAL_HIGH = "bp.systolic.critical_high"
    BP_DIA_NOTICE_HIGH = "bp.diastolic.notice_high"
    BP_DIA_WARNING_HIGH = "bp.diastolic.warning_high"
    BP_DIA_CRITICAL_HIGH = "bp.diastolic.critical_high"
    BP_SYS_WARNING_LOW = "bp.systolic.warning_low"
    BP_SYS_CRITICAL_LOW = "bp.systolic.critical_low"
    BP_CONFIRM_DELAY_S = "bp.confirm_delay_s"
    BP_CONFIRM_DEADLINE_S = "bp.confirm_deadline_s"
    GLUCOSE_LOW_NOTICE = "glucose.low.notice"
    GLUCOSE_LOW_WARNING = "glucose.low.warning"
    GLUCOSE_LOW_CRITICAL = "glucose.low.critical"
    GLUCOSE_HIGH_NOTICE = "glucose.high.notice"
    GLUCOSE_HIGH_WARNING = "glucose.high.warning"
    GLUCOSE_HIGH_CRITICAL = "glucose.high.critical"
    GLUCOSE_SWING_ENABLED = "glucose.swing.enabled"
    GLUCOSE_SWING_PERCENT = "glucose.swing.percent"
    GLUCOSE_SWING_WINDOW_S = "glucose.swing.window_s"
    CGM_LOW_WARNING = "cgm.low.warning"
    CGM_LOW_CRITICAL = "cgm.low.critical"
    CGM_HIGH_NOTICE = "cgm.high.notice"
    CGM_HIGH_WARNING = "cgm.high.warning"
    SPO2_LOW_NOTICE = "spo2.low.notice"
    SPO2_LOW_WARNING = "spo2.low.warning"
    SPO2_LOW_CRITICAL = "spo2.low.critical"
    PULSE_LOW_NOTICE = "pulse.low.notice"
    PULSE_LOW_CRITICAL = "pulse.low.critical"
    PULSE_HIGH_NOTICE = "pulse.high.notice"
    PULSE_HIGH_WARNING = "pulse.high.warning"
    PULSE_HIGH_CRITICAL = "pulse.high.critical"
    TEMP_LOW_NOTICE = "temperature.low.notice"
    TEMP_LOW_CRITICAL = "temperature.low.critical"
    TEMP_HIGH_NOTICE = "temperature.high.notice"
    TEMP_HIGH_WARNING = "temperature.high.warning"
    WEIGHT_TREND_ENABLED = "weight.trend.enabled"
    WEIGHT_GAIN_1D_NOTICE_KG = "weight.gain_1d.notice_kg"
    WEIGHT_GAIN_3D_WARNING_KG = "weight.gain_3d.warning_kg"
    BATTERY_METER_NOTICE = "battery.meter.notice"
    BATTERY_METER_WARNING = "battery.meter.warning"
    BATTERY_PENDANT_WARNING = "battery.pendant.warning"
    BATTERY_PENDANT_CRITICAL = "battery.pendant.critical"


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What one key means: its unit, default, comparison and the range a value must fall in to be plausible."""

    key: Key
    unit: str
    default: float
    cmp: Cmp
    lo: float
    hi: float
    switch: bool = False  # only 0 or 1


def _spec(
    key: Key, unit: str, default: float, cmp: Cmp, plausible: tuple[float, float], *, switch: bool = False
) -> KeySpec:
    return KeySpec(key, unit, default, cmp, plausible[0], plausible[1], switch)


# Plausibility ranges: values outside are typing errors (a systolic of 1800, a glucose in mmol/L where mg/dL was
# meant), not clinical choices. BP 40..300 / 20..200 mmHg, glucose 20..1000 mg/dL, SpO2 50..100 %, pulse 20..250
# bpm, temperature 30..45 °C cover every reading a home meter can report.
_SPECS: tuple[KeySpec, ...] = (
    # ACC/AHA 2017 (Whelton et al.), Table 6 stage 2: SBP >=140 or DBP >=90.
    _spec(Key.BP_SYS_NOTICE_HIGH, "mmHg", 140, Cmp.GE, (40, 300)),
    # thresholds.md §8: ">=160 / >=100, common practice; no source".
    _spec(Key.BP_SYS_WARNING_HIGH, "mmHg", 160, Cmp.GE, (40, 300)),
    # ACC/AHA 2017 §11.2 hypertensive crisis: SBP >180 and/or DBP >120 (kept by the 2025 AHA/ACC guideline).
    _spec(Key.BP_SYS_CRITICAL_HIGH, "mmHg", 180, Cmp.GT, (40, 300)),
    _spec(Key.BP_DIA_NOTICE_HIGH, "mmHg", 90, Cmp.GE, (20, 200)),
    _spec(Key.BP_DIA_WARNING_HIGH, "mmHg", 100, Cmp.GE, (20, 200)),
    _spec(Key.BP_DIA_CRITICAL_HIGH, "mmHg", 120, Cmp.GT, (20, 200)),
    # RCP NEWS2 2017 chart 1: SBP 91-100 scores 2, <=90 scores 3.
    _spec(Key.BP_SYS_WARNING_LOW, "mmHg", 100, Cmp.LE, (40, 300)),
    _spec(Key.BP_SYS_CRITICAL_LOW, "mmHg", 90, Cmp.LE, (40, 300)),
    # A crisis reading is repeated after rest before it is believed (white-coat effect, cuff errors); 5 min of rest,
    # then a reading that must arrive within 10 min of the first (thresholds.md: a doctor follows up in ~10 min).
    _spec(Key.BP_CONFIRM_DELAY_S, "s", 300, Cmp.NONE, (30, 3600)),
    _spec(Key.BP_CONFIRM_DEADLINE_S, "s", 600, Cmp.NONE, (60, 7200)),
    # ADA Standards of Care §6: level 1 hypoglycaemia <70 mg/dL (3.9 mmol/L), level 2 <54 mg/dL (3.0 mmol/L).
    _spec(Key.GLUCOSE_LOW_NOTICE, "mg/dL", 70, Cmp.LT, (20, 1000)),
    _spec(Key.GLUCOSE_LOW_WARNING, "mg/dL", 54, Cmp.LT, (20, 1000)),
    _spec(Key.GLUCOSE_LOW_CRITICAL, "mg/dL", 54, Cmp.LT, (20, 1000)),
    # Agiostratidou 2017 / Battelino 2019: hyperglycaemia level 1 >180, level 2 >250 mg/dL;
    # ADA/EASD/JBDS/AACE/DTS 2024 consensus (unverified in thresholds.md): HHS at >=600 mg/dL (33.3 mmol/L).
    _spec(Key.GLUCOSE_HIGH_NOTICE, "mg/dL", 180, Cmp.GT, (20, 1000)),
    _spec(Key.GLUCOSE_HIGH_WARNING, "mg/dL", 250, Cmp.GT, (20, 1000)),
    _spec(Key.GLUCOSE_HIGH_CRITICAL, "mg/dL", 600, Cmp.GE, (20, 1000)),
    # Community chronic-disease programme (thresholds.md, top): a swing >30% between readings -> medication review.
    _spec(Key.GLUCOSE_SWING_ENABLED, "0/1", 1, Cmp.NONE, (0, 1), switch=True),
    _spec(Key.GLUCOSE_SWING_PERCENT, "%", 30, Cmp.GT, (5, 200)),
    _spec(Key.GLUCOSE_SWING_WINDOW_S, "s", 86400, Cmp.NONE, (600, 7 * 86400)),
    # Continuous glucose monitoring (thresholds.md §2: ADA Standards of Care §6 level 1 <70 and level 2 <54 mg/dL;
    # §8 item 3: CGM hyperglycaemia levels 1 >180 and 2 >250, Battelino 2019 consensus).
    _spec(Key.CGM_LOW_WARNING, "mg/dL", 70, Cmp.LT, (20, 1000)),
    _spec(Key.CGM_LOW_CRITICAL, "mg/dL", 54, Cmp.LT, (20, 1000)),
    _spec(Key.CGM_HIGH_NOTICE, "mg/dL", 180, Cmp.GT, (20, 1000)),
    _spec(Key.CGM_HIGH_WARNING, "mg/dL", 250, Cmp.GT, (20, 1000)),
    # RCP NEWS2 scale 1: 94-95 = 1, 92-93 = 2, <=91 = 3; BTS 2017 target 94-98 %; NHS Oximetry @home <=92 severe.
    _spec(Key.SPO2_LOW_NOTICE, "%", 95, Cmp.LE, (50, 100)),
    _spec(Key.SPO2_LOW_WARNING, "%", 93, Cmp.LE, (50, 100)),
    _spec(Key.SPO2_LOW_CRITICAL, "%", 91, Cmp.LE, (50, 100)),
    # RCP NEWS2 pulse: <=40 = 3; 41-50 = 1; 51-90 = 0; 91-110 = 1; 111-130 = 2; >=131 = 3.
    _spec(Key.PULSE_LOW_NOTICE, "bpm", 50, Cmp.LE, (20, 250)),
    _spec(Key.PULSE_LOW_CRITICAL, "bpm", 40, Cmp.LE, (20, 250)),
    _spec(Key.PULSE_HIGH_NOTICE, "bpm", 91, Cmp.GE, (20, 250)),
    _spec(Key.PULSE_HIGH_WARNING, "bpm", 111, Cmp.GE, (20, 250)),
    _spec(Key.PULSE_HIGH_CRITICAL, "bpm", 131, Cmp.GE, (20, 250)),
    # RCP NEWS2 temperature: <=35.0 = 3; 35.1-36.0 = 1; 36.1-38.0 = 0; 38.1-39.0 = 1; >=39.1 = 2.
    _spec(Key.TEMP_LOW_NOTICE, "°C", 36.0, Cmp.LE, (30, 45)),
    _spec(Key.TEMP_LOW_CRITICAL, "°C", 35.0, Cmp.LE, (30, 45)),
    _spec(Key.TEMP_HIGH_NOTICE, "°C", 38.0, Cmp.GT, (30, 45)),
    _spec(Key.TEMP_HIGH_WARNING, "°C", 39.0, Cmp.GT, (30, 45)),
    # ESC HFA self-care (Jaarsma et al. 2021): ">2 kg in 3 days"; ">1 kg/day" is a telemonitoring convention with
    # no primary guideline (thresholds.md §6). Off unless the heart_failure profile (or the doctor) turns it on.
    _spec(Key.WEIGHT_TREND_ENABLED, "0/1", 0, Cmp.NONE, (0, 1), switch=True),
    _spec(Key.WEIGHT_GAIN_1D_NOTICE_KG, "kg", 1.0, Cmp.GT, (0.1, 20)),
    _spec(Key.WEIGHT_GAIN_3D_WARNING_KG, "kg", 2.0, Cmp.GT, (0.1, 20)),
    # Engineering choices, not clinical: meters warn early enough to buy batteries. The pendant is one tier
    # higher at each level because a pendant with a dead battery turns a fall into a call nobody hears.
    _spec(Key.BATTERY_METER_NOTICE, "%", 20, Cmp.LE, (1, 100)),
    _spec(Key.BATTERY_METER_WARNING, "%", 10, Cmp.LE, (1, 100)),
    _spec(Key.BATTERY_PENDANT_WARNING, "%", 20, Cmp.LE, (1, 100)),
    _spec(Key.BATTERY_PENDANT_CRITICAL, "%", 10, Cmp.LE, (1, 100)),
)

SPECS: Mapping[Key, KeySpec] = MappingProxyType({s.key: s for s in _SPECS})
DEFAULTS: Mapping[Key, float] = MappingProxyType({s.key: float(s.default) for s in _SPECS})

# (lower, higher): the value of `lower` must not exceed the value of `higher`. Tiers of a "high" rule rise with
# urgency, tiers of a "low" rule fall, and a vital's low and high bands must not overlap.
_ORDER: tuple[tuple[Key, Key], ...] = (
    (Key.BP_SYS_NOTICE_HIGH, Key.BP_SYS_WARNING_HIGH),
    (Key.BP_SYS_WARNING_HIGH, Key.BP_SYS_CRITICAL_HIGH),
    (Key.BP_DIA_NOTICE_HIGH, Key.BP_DIA_WARNING_HIGH),
    (Key.BP_DIA_WARNING_HIGH, Key.BP_DIA_CRITICAL_HIGH),
    (Key.BP_SYS_CRITICAL_LOW, Key.BP_SYS_WARNING_LOW),
    (Key.BP_SYS_WARNING_LOW, Key.BP_SYS_NOTICE_HIGH),
    (Key.BP_CONFIRM_DELAY_S, Key.BP_CONFIRM_DEADLINE_S),
    (Key.GLUCOSE_LOW_CRITICAL, Key.GLUCOSE_LOW_WARNING),
    (Key.GLUCOSE_LOW_WARNING, Key.GLUCOSE_LOW_NOTICE),
    (Key.GLUCOSE_LOW_NOTICE, Key.GLUCOSE_HIGH_NOTICE),
    (Key.GLUCOSE_HIGH_NOTICE, Key.GLUCOSE_HIGH_WARNING),
    (Key.GLUCOSE_HIGH_WARNING, Key.GLUCOSE_HIGH_CRITICAL),
    (Key.CGM_LOW_CRITICAL, Key.CGM_LOW_WARNING),
    (Key.CGM_LOW_WARNING, Key.CGM_HIGH_NOTICE),
    (Key.CGM_HIGH_NOTICE, Key.CGM_HIGH_WARNING),
    (Key.SPO2_LOW_CRITICAL, Key.SPO2_LOW_WARNING),
    (Key.SPO2_LOW_WARNING, Key.SPO2_LOW_NOTICE),
    (Key.PULSE_LOW_CRITICAL, Key.PULSE_LOW_NOTICE),
    (Key.PULSE_LOW_NOTICE, Key.PULSE_HIGH_NOTICE),
    (Key.PULSE_HIGH_NOTICE, Key.PULSE_HIGH_WARNING),
    (Key.PULSE_HIGH_WARNING, Key.PULSE_HIGH_CRITICAL),
    (Key.TEMP_LOW_CRITICAL, Key.TEMP_LOW_NOTICE),
    (Key.TEMP_LOW_NOTICE, Key.TEMP_HIGH_NOTICE),
    (Key.TEMP_HIGH_NOTICE, Key.TEMP_HIGH_WARNING),
    (Key.BATTERY_METER_WARNING, Key.BATTERY_METER_NOTICE),
    (Key.BATTERY_PENDANT_CRITICAL, Key.BATTERY_PENDANT_WARNING),
)
# Pairs that must differ strictly: a bound between a vital's low and high bands, and the BP timings.
_STRICT: frozenset[tuple[Key, Key]] = frozenset(
    {
        (Key.BP_SYS_WARNING_LOW, Key.BP_SYS_NOTICE_HIGH),
        (Key.BP_CONFIRM_DELAY_S, Key.BP_CONFIRM_DEADLINE_S),
        (Key.GLUCOSE_LOW_NOTICE, Key.GLUCOSE_HIGH_NOTICE),
        (Key.CGM_LOW_WARNING, Key.CGM_HIGH_NOTICE),
        (Key.PULSE_LOW_NOTICE, Key.PULSE_HIGH_NOTICE),
        (Key.TEMP_LOW_NOTICE, Key.TEMP_HIGH_NOTICE),
    }
)

# Doctors' presets: overrides applied in the order the resident's profiles are listed, before per-key overrides.
PROFILES: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        # The section 8 mapping unchanged.
        "default": MappingProxyType({}),
        # Community chronic-disease programmes (thresholds.md, top) call for immediate community-doctor action at
        # BP > 180/110: the diastolic crisis line moves from 120 to 110 for residents enrolled for hypertension.
        "hypertension": MappingProxyType({Key.BP_DIA_CRITICAL_HIGH.value: 110.0}),
        # The defaults already are the ADA hypoglycaemia levels and the consensus hyperglycaemia levels (with HHS,
        # the type 2 crisis, at >=600), and the swing rule is on. The preset changes no number; naming it records
        # the doctor's choice, and `resolve_thresholds` accepts it so profiles can be listed per condition.
        "type2_diabetes": MappingProxyType({}),
        # BTS 2017: target 88-92 % for patients at risk of hypercapnic failure; NEWS2 scale 2 scores 86-87 = 1,
        # 84-85 = 2, <=83 = 3. Readings of 88-92 are on target and raise nothing.
        "copd": MappingProxyType(
            {
                Key.SPO2_LOW_NOTICE.value: 87.0,
                Key.SPO2_LOW_WARNING.value: 85.0,
                Key.SPO2_LOW_CRITICAL.value: 83.0,
            }
        ),
        # ESC HFA self-care: >2 kg in 3 days is fluid retention, so the weight trend rules are turned on. A resting
        # pulse above 100 (tachycardia, 2015 ACC/AHA/HRS; unverified in thresholds.md) is an early sign of
        # decompensation or atrial fibrillation in heart failure, so the pulse warning tier moves from 111 to 101.
        # The low pulse tiers stay: beta-blocked patients commonly sit at 50-60 bpm.
        "heart_failure": MappingProxyType(
            {
                Key.WEIGHT_TREND_ENABLED.value: 1.0,
                Key.PULSE_HIGH_WARNING.value: 101.0,
            }
        ),
    }
)


class ThresholdProblem(enum.StrEnum):
    """Why a threshold set was refused."""

    UNKNOWN_KEY = "unknown_key"
    UNKNOWN_PROFILE = "unknown_profile"
    NOT_A_NUMBER = "not_a_number"
    NOT_FINITE = "not_finite"
    IMPLAUSIBLE = "implausible"
    OUT_OF_ORDER = "out_of_order"


class ThresholdError(ValueError):
    """A threshold set that must not be used; names the key (or profile) and why.

    Attributes:
        key: the offending key or profile name, exactly as given.
        problem: the kind of problem.
        detail: a sentence for the installer or the platform operator.
    """

    def __init__(self, key: str, problem: ThresholdProblem, detail: str) -> None:
        self.key = key
        self.problem = problem
        self.detail = detail
        super().__init__(f"{key}: {detail}")


def _check_value(key: str, value: object) -> tuple[Key, float]:
    try:
        k = Key(key)
    except ValueError:
        raise ThresholdError(key, ThresholdProblem.UNKNOWN_KEY, "unknown threshold key") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ThresholdError(key, ThresholdProblem.NOT_A_NUMBER, f"expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ThresholdError(key, ThresholdProblem.NOT_FINITE, f"expected a finite number, got {value!r}")
    spec = SPECS[k]
    if spec.switch and number not in (0.0, 1.0):
        raise ThresholdError(key, ThresholdProblem.IMPLAUSIBLE, f"expected 0 (off) or 1 (on), got {value!r}")
    if not spec.lo <= number <= spec.hi:
        raise ThresholdError(
            key, ThresholdProblem.IMPLAUSIBLE, f"{number:g} {spec.unit} is outside {spec.lo:g}..{spec.hi:g}"
        )
    return k, number


def _check_order(values: Mapping[Key, float], changed: Iterable[Key]) -> None:
    # Blame the key of the pair that was set last: a resident's override over a profile, a profile over a default.
    last_set = {key: i for i, key in enumerate(changed)}
    for lower, higher in _ORDER:
        a, b = values[lower], values[higher]
        strict = (lower, higher) in _STRICT
        if a < b or (a == b and not strict):
            continue
        blamed = higher if last_set.get(higher, -1) > last_set.get(lower, -1) else lower
        relation = "below" if strict else "at or below"
        raise ThresholdError(
            blamed.value,
            ThresholdProblem.OUT_OF_ORDER,
            f"{lower.value} ({a:g}) must be {relation} {higher.value} ({b:g})",
        )


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A complete, validated threshold set: every key has a value. Build with :func:`resolve_thresholds`."""

    values: Mapping[Key, float]
    profiles: tuple[str, ...] = ()

    def __getitem__(self, key: Key) -> float:
        return self.values[key]

    def enabled(self, key: Key) -> bool:
        """A 0/1 switch key read as a boolean."""
        return self.values[key] >= 1.0

    def as_dict(self) -> dict[str, float]:
        """Plain ``{key: value}`` for records and the platform."""
        return {k.value: v for k, v in self.values.items()}

    def updated(self, changes: Mapping[str, float]) -> Thresholds:
        """A new set with `changes` applied, validated as a whole (run-time updates from the platform).

        Raises:
            ThresholdError: naming the first offending key; this set is unchanged.
        """
        merged = dict(self.values)
        touched: list[Key] = []
        for key, value in changes.items():
            k, number = _check_value(key, value)
            merged[k] = number
            touched.append(k)
        _check_order(merged, touched)
        return Thresholds(MappingProxyType(merged), self.profiles)


def resolve_thresholds(profiles: Iterable[str] = (), overrides: Mapping[str, float] | None = None) -> Thresholds:
    """The defaults, then each named profile's overrides in order, then the resident's own `overrides`.

    Raises:
        ThresholdError: an unknown profile or key, a non-finite or implausible value, or tiers out of order.
    """
    names = tuple(profiles)
    merged: dict[Key, float] = dict(DEFAULTS)
    touched: list[Key] = []
    for name in names:
        preset = PROFILES.get(name)
        if preset is None:
            known = ", ".join(PROFILES)
            raise ThresholdError(name, ThresholdProblem.UNKNOWN_PROFILE, f"unknown profile (known: {known})")
        for key, value in preset.items():
            k, number = _check_value(key, value)
            merged[k] = number
            touched.append(k)
    for key, value in (overrides or {}).items():
        k, number = _check_value(key, value)
        merged[k] = number
        touched.append(k)
    _check_order(merged, touched)
    return Thresholds(MappingProxyType(merged), names)


def check_update(changes: Mapping[str, float | None]) -> Thresholds:
    """Check a threshold update as the platform sends it (``ThresholdUpdate.values``: key -> number, or ``None``
    to restore the default) before it is sent: every key known, every number plausible, and the tiers in order
    when the update is applied to the defaults.

    The platform does not know a resident's profiles or earlier overrides, so the order is checked against the
    defaults; the hub checks the update again against the resident's own set when it applies it.

    Returns:
        The defaults with ``changes`` applied.

    Raises:
        ThresholdError: naming the first offending key.
    """
    numbers: dict[str, float] = {}
    for key, value in changes.items():
        if value is None:
            try:
                Key(key)
            except ValueError:
                raise ThresholdError(key, ThresholdProblem.UNKNOWN_KEY, "unknown threshold key") from None
            continue
        numbers[key] = value
    return resolve_thresholds(overrides=numbers)
