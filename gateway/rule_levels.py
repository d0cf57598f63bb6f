"""The single-threshold rules: which vital, which tiers, which threshold keys and which voice message, most urgent
first. Values come from the resident's thresholds (`gateway.thresholds`, sourced in ../shared/thresholds.md)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.observations import Vital
from gateway.thresholds import SPECS, Key, Thresholds, Tier

__all__ = [
    "BATTERY_METER",
    "BATTERY_PENDANT",
    "BP_HIGH_DIA",
    "BP_HIGH_SYS",
    "LEVEL_RULES",
    "Level",
    "LevelRule",
    "judge",
]


@dataclass(frozen=True, slots=True)
class Level:
    """One tier of a single-threshold rule: fires when the reading passes `key` under the key's comparison."""

    tier: Tier
    key: Key
    message: str


@dataclass(frozen=True, slots=True)
class LevelRule:
    """A condition judged on one vital by tiers, most urgent first."""

    condition: str
    vital: Vital
    levels: tuple[Level, ...]


BP_HIGH_SYS = LevelRule(
    "bp.high",
    Vital.SYSTOLIC,
    (
        Level(Tier.WARNING, Key.BP_SYS_WARNING_HIGH, "bp_very_high"),
        Level(Tier.NOTICE, Key.BP_SYS_NOTICE_HIGH, "bp_high"),
    ),
)
BP_HIGH_DIA = LevelRule(
    "bp.high",
    Vital.DIASTOLIC,
    (
        Level(Tier.WARNING, Key.BP_DIA_WARNING_HIGH, "bp_very_high"),
        Level(Tier.NOTICE, Key.BP_DIA_NOTICE_HIGH, "bp_high"),
    ),
)
LEVEL_RULES: tuple[LevelRule, ...] = (
    LevelRule(
        "bp.low",
        Vital.SYSTOLIC,
        (
            Level(Tier.CRITICAL, Key.BP_SYS_CRITICAL_LOW, "bp_low"),
            Level(Tier.WARNING, Key.BP_SYS_WARNING_LOW, "bp_low"),
        ),
    ),
    LevelRule(
        "glucose.low",
        Vital.GLUCOSE,
        (
            Level(Tier.CRITICAL, Key.GLUCOSE_LOW_CRITICAL, "glucose_hypo_critical"),
            Level(Tier.WARNING, Key.GLUCOSE_LOW_WARNING, "glucose_low"),
            Level(Tier.NOTICE, Key.GLUCOSE_LOW_NOTICE, "glucose_low"),
        ),
    ),
    LevelRule(
        "glucose.high",
        Vital.GLUCOSE,
        (
            Level(Tier.CRITICAL, Key.GLUCOSE_HIGH_CRITICAL, "glucose_very_high"),
            Level(Tier.WARNING, Key.GLUCOSE_HIGH_WARNING, "glucose_very_high"),
            Level(Tier.NOTICE, Key.GLUCOSE_HIGH_NOTICE, "glucose_high"),
        ),
    ),
    # A continuous glucose monitor's readings (interstitial glucose): their own thresholds (protocols.thresholds).
    LevelRule(
        "cgm.low",
        Vital.CGM_GLUCOSE,
        (
            Level(Tier.CRITICAL, Key.CGM_LOW_CRITICAL, "glucose_hypo_critical"),
            Level(Tier.WARNING, Key.CGM_LOW_WARNING, "glucose_low"),
        ),
    ),
    LevelRule(
        "cgm.high",
        Vital.CGM_GLUCOSE,
        (
            Level(Tier.WARNING, Key.CGM_HIGH_WARNING, "glucose_very_high"),
            Level(Tier.NOTICE, Key.CGM_HIGH_NOTICE, "glucose_high"),
        ),
    ),
    LevelRule(
        "spo2.low",
        Vital.SPO2,
        (
            Level(Tier.CRITICAL, Key.SPO2_LOW_CRITICAL, "spo2_critical"),
            Level(Tier.WARNING, Key.SPO2_LOW_WARNING, "spo2_low"),
            Level(Tier.NOTICE, Key.SPO2_LOW_NOTICE, "spo2_low"),
        ),
    ),
    LevelRule(
        "pulse.low",
        Vital.PULSE,
        (
            Level(Tier.CRITICAL, Key.PULSE_LOW_CRITICAL, "pulse_critical"),
            Level(Tier.NOTICE, Key.PULSE_LOW_NOTICE, "pulse_abnormal"),
        ),
    ),
    LevelRule(
        "pulse.high",
        Vital.PULSE,
        (
            Level(Tier.CRITICAL, Key.PULSE_HIGH_CRITICAL, "pulse_critical"),
            Level(Tier.WARNING, Key.PULSE_HIGH_WARNING, "pulse_abnormal"),
            Level(Tier.NOTICE, Key.PULSE_HIGH_NOTICE, "pulse_abnormal"),
        ),
    ),
    LevelRule(
        "temperature.low",
        Vital.TEMPERATURE,
        (
            Level(Tier.CRITICAL, Key.TEMP_LOW_CRITICAL, "temperature_critical"),
            Level(Tier.NOTICE, Key.TEMP_LOW_NOTICE, "temperature_low"),
        ),
    ),
    LevelRule(
        "temperature.high",
        Vital.TEMPERATURE,
        (
            Level(Tier.WARNING, Key.TEMP_HIGH_WARNING, "temperature_fever"),
            Level(Tier.NOTICE, Key.TEMP_HIGH_NOTICE, "temperature_fever"),
        ),
    ),
)
BATTERY_PENDANT = LevelRule(
    "battery.low",
    Vital.BATTERY,
    (
        Level(Tier.CRITICAL, Key.BATTERY_PENDANT_CRITICAL, "battery_low_pendant"),
        Level(Tier.WARNING, Key.BATTERY_PENDANT_WARNING, "battery_low_pendant"),
    ),
)
BATTERY_METER = LevelRule(
    "battery.low",
    Vital.BATTERY,
    (
        Level(Tier.WARNING, Key.BATTERY_METER_WARNING, "battery_low_meter"),
        Level(Tier.NOTICE, Key.BATTERY_METER_NOTICE, "battery_low_meter"),
    ),
)


def judge(rule: LevelRule, value: float, thresholds: Thresholds) -> tuple[Level, float] | None:
    """The most urgent level `value` reaches under `rule`, with that level's threshold; None when in range."""
    for level in rule.levels:
        threshold = thresholds[level.key]
        if SPECS[level.key].cmp.fires(value, threshold):
            return level, threshold
    return None
