"""Threshold defaults, profiles, overrides, run-time updates and their validation; unit conversions."""

from __future__ import annotations

import math

import pytest

from gateway.thresholds import (
    DEFAULTS,
    PROFILES,
    SPECS,
    Cmp,
    Key,
    ThresholdError,
    ThresholdProblem,
    Tier,
    fahrenheit_to_celsius,
    kpa_to_mmhg,
    lb_to_kg,
    mmol_per_l_to_mg_dl,
    resolve_thresholds,
)
from protocols import thresholds as thresholds_module


def test_every_key_is_documented_with_its_unit_and_default_in_the_module_docstring() -> None:
    doc = thresholds_module.__doc__ or ""
    rows = {line.split()[0]: line.split()[1:3] for line in doc.splitlines() if line.split() and "." in line.split()[0]}
    for key, spec in SPECS.items():
        assert key.value in rows, key
        unit, default = rows[key.value]
        assert unit == spec.unit
        assert float(default) == spec.default


def test_defaults_follow_the_cited_section_8_mapping() -> None:
    t = resolve_thresholds()
    assert t[Key.BP_SYS_CRITICAL_HIGH] == 180
    assert SPECS[Key.BP_SYS_CRITICAL_HIGH].cmp is Cmp.GT
    assert t[Key.BP_DIA_CRITICAL_HIGH] == 120
    assert t[Key.BP_SYS_CRITICAL_LOW] == 90
    assert SPECS[Key.BP_SYS_CRITICAL_LOW].cmp is Cmp.LE
    assert t[Key.GLUCOSE_LOW_NOTICE] == 70
    assert t[Key.GLUCOSE_LOW_CRITICAL] == 54
    assert SPECS[Key.GLUCOSE_LOW_CRITICAL].cmp is Cmp.LT
    assert (t[Key.GLUCOSE_HIGH_NOTICE], t[Key.GLUCOSE_HIGH_WARNING], t[Key.GLUCOSE_HIGH_CRITICAL]) == (180, 250, 600)
    assert (t[Key.SPO2_LOW_NOTICE], t[Key.SPO2_LOW_WARNING], t[Key.SPO2_LOW_CRITICAL]) == (95, 93, 91)
    assert (t[Key.PULSE_LOW_CRITICAL], t[Key.PULSE_HIGH_CRITICAL]) == (40, 131)
    assert (t[Key.TEMP_LOW_CRITICAL], t[Key.TEMP_HIGH_WARNING]) == (35.0, 39.0)
    assert t[Key.WEIGHT_GAIN_3D_WARNING_KG] == 2.0
    assert t[Key.BP_CONFIRM_DELAY_S] == 300
    assert not t.enabled(Key.WEIGHT_TREND_ENABLED)
    assert t.enabled(Key.GLUCOSE_SWING_ENABLED)
    assert t.as_dict() == {k.value: v for k, v in DEFAULTS.items()}


@pytest.mark.parametrize(
    ("cmp", "reading", "threshold", "fires"),
    [
        (Cmp.GT, 180, 180, False),
        (Cmp.GT, 181, 180, True),
        (Cmp.GE, 131, 131, True),
        (Cmp.GE, 130, 131, False),
        (Cmp.LT, 54, 54, False),
        (Cmp.LT, 53.9, 54, True),
        (Cmp.LE, 91, 91, True),
        (Cmp.LE, 92, 91, False),
        (Cmp.NONE, 1000, 0, False),
    ],
)
def test_comparisons_at_their_edges(cmp: Cmp, reading: float, threshold: float, fires: bool) -> None:
    assert cmp.fires(reading, threshold) is fires


def test_copd_profile_lowers_spo2_tiers_to_the_bts_target() -> None:
    t = resolve_thresholds(["copd"])
    assert (t[Key.SPO2_LOW_NOTICE], t[Key.SPO2_LOW_WARNING], t[Key.SPO2_LOW_CRITICAL]) == (87, 85, 83)
    assert t.profiles == ("copd",)


def test_heart_failure_turns_the_weight_rules_on_and_tightens_pulse() -> None:
    t = resolve_thresholds(["heart_failure"])
    assert t.enabled(Key.WEIGHT_TREND_ENABLED)
    assert t[Key.PULSE_HIGH_WARNING] == 101


def test_hypertension_uses_the_community_programmes_diastolic_line() -> None:
    assert resolve_thresholds(["hypertension"])[Key.BP_DIA_CRITICAL_HIGH] == 110


def test_every_profile_resolves_alone_and_all_together() -> None:
    for name in PROFILES:
        resolve_thresholds([name])
    combined = resolve_thresholds(list(PROFILES))
    assert combined[Key.SPO2_LOW_CRITICAL] == 83


def test_overrides_apply_after_profiles() -> None:
    t = resolve_thresholds(["copd"], {"spo2.low.critical": 82, "bp.systolic.critical_high": 170})
    assert t[Key.SPO2_LOW_CRITICAL] == 82
    assert t[Key.BP_SYS_CRITICAL_HIGH] == 170


@pytest.mark.parametrize(
    ("profiles", "overrides", "key", "problem"),
    [
        ((), {"bp.systolic.crit": 170}, "bp.systolic.crit", ThresholdProblem.UNKNOWN_KEY),
        (("asthma",), {}, "asthma", ThresholdProblem.UNKNOWN_PROFILE),
        ((), {"glucose.low.notice": math.nan}, "glucose.low.notice", ThresholdProblem.NOT_FINITE),
        ((), {"glucose.low.notice": math.inf}, "glucose.low.notice", ThresholdProblem.NOT_FINITE),
        ((), {"spo2.low.notice": True}, "spo2.low.notice", ThresholdProblem.NOT_A_NUMBER),
        ((), {"spo2.low.notice": "94"}, "spo2.low.notice", ThresholdProblem.NOT_A_NUMBER),
        ((), {"bp.systolic.critical_high": 1800}, "bp.systolic.critical_high", ThresholdProblem.IMPLAUSIBLE),
        ((), {"bp.systolic.critical_low": 39}, "bp.systolic.critical_low", ThresholdProblem.IMPLAUSIBLE),
        ((), {"glucose.low.critical": 3.0}, "glucose.low.critical", ThresholdProblem.IMPLAUSIBLE),
        ((), {"weight.trend.enabled": 0.5}, "weight.trend.enabled", ThresholdProblem.IMPLAUSIBLE),
        # Tiers out of order: a "high" rule's warning below its notice, a "low" rule's critical above its notice.
        ((), {"bp.systolic.warning_high": 130}, "bp.systolic.warning_high", ThresholdProblem.OUT_OF_ORDER),
        ((), {"glucose.low.critical": 75}, "glucose.low.critical", ThresholdProblem.OUT_OF_ORDER),
        (("copd",), {"spo2.low.notice": 84}, "spo2.low.notice", ThresholdProblem.OUT_OF_ORDER),
        ((), {"pulse.low.notice": 95}, "pulse.low.notice", ThresholdProblem.OUT_OF_ORDER),
        ((), {"bp.confirm_deadline_s": 300}, "bp.confirm_deadline_s", ThresholdProblem.OUT_OF_ORDER),
        ((), {"battery.pendant.critical": 30}, "battery.pendant.critical", ThresholdProblem.OUT_OF_ORDER),
    ],
)
def test_invalid_sets_are_refused_naming_the_key(
    profiles: tuple[str, ...], overrides: dict[str, float], key: str, problem: ThresholdProblem
) -> None:
    with pytest.raises(ThresholdError) as info:
        resolve_thresholds(profiles, overrides)
    assert info.value.key == key
    assert info.value.problem is problem
    assert str(info.value).startswith(f"{key}: ")


def test_equal_tiers_are_allowed_for_an_empty_band() -> None:
    t = resolve_thresholds((), {"bp.systolic.warning_high": 140})
    assert t[Key.BP_SYS_WARNING_HIGH] == t[Key.BP_SYS_NOTICE_HIGH]


def test_runtime_update_returns_a_new_validated_set_and_leaves_the_old_one() -> None:
    t = resolve_thresholds()
    updated = t.updated({"glucose.high.notice": 200, "glucose.high.warning": 280})
    assert (updated[Key.GLUCOSE_HIGH_NOTICE], updated[Key.GLUCOSE_HIGH_WARNING]) == (200, 280)
    assert t[Key.GLUCOSE_HIGH_NOTICE] == 180


def test_runtime_update_errors_name_the_key_and_change_nothing() -> None:
    t = resolve_thresholds(["copd"])
    with pytest.raises(ThresholdError) as info:
        t.updated({"spo2.low.warning": 90})  # above the COPD notice of 87
    assert info.value.key == "spo2.low.warning"
    assert info.value.problem is ThresholdProblem.OUT_OF_ORDER
    with pytest.raises(ThresholdError) as info:
        t.updated({"spo2.low.typo": 90})
    assert info.value.problem is ThresholdProblem.UNKNOWN_KEY
    assert t[Key.SPO2_LOW_WARNING] == 85


def test_tier_order_and_labels() -> None:
    assert Tier.INFO < Tier.NOTICE < Tier.WARNING < Tier.CRITICAL
    assert Tier.CRITICAL.label == "critical"


def test_kpa_conversion() -> None:
    # thresholds.md §1: 180 mmHg ~ 24.0 kPa; 1 kPa = 7.50062 mmHg.
    assert kpa_to_mmhg(24.0) == pytest.approx(180.01488)
    assert kpa_to_mmhg(16.0) == pytest.approx(120.00992)
    assert kpa_to_mmhg(12.0) == pytest.approx(90.00744)


def test_mmol_conversion() -> None:
    # mg/dL = mmol/L x 18.016: 3.0 mmol/L is 54.048 mg/dL (just above the level 2 line), 3.9 -> 70.26.
    assert mmol_per_l_to_mg_dl(3.0) == pytest.approx(54.048)
    assert mmol_per_l_to_mg_dl(3.9) == pytest.approx(70.2624)
    assert mmol_per_l_to_mg_dl(33.3) == pytest.approx(599.9328)


def test_fahrenheit_conversion_lands_exactly_on_band_edges() -> None:
    assert fahrenheit_to_celsius(100.4) == 38.0
    assert fahrenheit_to_celsius(102.2) == 39.0
    assert fahrenheit_to_celsius(95.0) == 35.0
    assert fahrenheit_to_celsius(32.0) == 0.0


def test_pound_conversion() -> None:
    assert lb_to_kg(3.0) == pytest.approx(1.360776)
    assert lb_to_kg(154.0) == pytest.approx(69.853168)
