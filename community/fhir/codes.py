"""The code systems and codes of carehub's FHIR export (issue 18 item 6), each checked against a published source.

MDC codes are the 32-bit IEEE 11073-10101 nomenclature codes, ``partition * 65536 + term code``; the comments give the
reference identifier, the term code and where it was checked. LOINC codes are the vital-signs and laboratory codes the
HL7 FHIR vital-signs profiles and implementation guides use. Units are UCUM codes (``http://unitsofmeasure.org``).
``docs/fhir.md`` has the same table for readers.

Sources (checked 2026-12, see ``docs/fhir.md``):

- [PHD] HL7 Personal Health Device IG (hl7.org/fhir/uv/phd): MDC system ``urn:iso:std:iso:11073:10101``; its
  spot-numeric example codes the oximeter pulse rate 149530 with LOINC 8867-4.
- [PoCD] HL7 Point-of-Care Device IG examples: BP panel 85354-9 with 150020, heart rate 8867-4 with 147842.
- [VS] FHIR R4 vital-signs profiles (hl7.org/fhir/R4B/heartrate.html, bp.html, bodyweight.html, bodyheight.html) and
  the BP panel value set (observation-vitalsign-bppanel): 85354-9, 8480-6, 8462-4, 8867-4, 29463-7, 8302-2.
- [USCore] US Core pulse-oximetry example: 59408-5 and 2708-6 with MDC 150456; blood-glucose example 2339-0.
- [LIVD] HL7 LIVD test-code mappings: 2345-7, 14749-6 (glucose in serum or plasma).
- [HDDT] gematik HDDT value sets: 41653-7, 14743-9 (capillary blood by glucometer), 99504-3, 105272-9 (interstitial
  fluid), and MDC 160184 (MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD) in their examples.
- [x73] IEEE 11073-20601 nomenclature headers of open-source PHD managers (e.g. Antidote's nomenclature.h), which
  list the term codes: SCADA partition 2, infrastructure partition 8.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = [
    "LOINC",
    "MDC",
    "UCUM",
    "Code",
    "Concept",
    "DeviceType",
]

LOINC: Final = "http://loinc.org"
MDC: Final = "urn:iso:std:iso:11073:10101"  # [PHD]
UCUM: Final = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
COMMUNICATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/communication-category"
FLAG_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/flag-category"
DATA_ABSENT_REASON: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"


@dataclass(frozen=True, slots=True)
class Code:
    """One coding: a code of a code system and its display text."""

    system: str
    code: str
    display: str

    def to_json(self) -> dict[str, str]:
        """The FHIR ``Coding``."""
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True, slots=True)
class Concept:
    """What is measured: its LOINC code(s) and its MDC code (``codes`` in that order), and a short text."""

    text: str
    codes: tuple[Code, ...]

    def to_json(self) -> dict[str, object]:
        """The FHIR ``CodeableConcept``."""
        return {"coding": [c.to_json() for c in self.codes], "text": self.text}

    def matches(self, token: str) -> bool:
        """Whether a FHIR token search value (``code`` or ``system|code``) names one of the codes."""
        system, bar, code = token.rpartition("|")
        return any(c.code == code and (not bar or c.system == system) for c in self.codes)


def _loinc(code: str, display: str) -> Code:
    return Code(LOINC, code, display)


def _mdc(code: int, reference_id: str) -> Code:
    return Code(MDC, str(code), reference_id)


# --- blood pressure (0x2A35) -------------------------------------------------------------------------------------
# MDC_PRESS_BLD_NONINV 2::18948 and its _SYS/_DIA/_MEAN 18949..18951 [x73]; 150020 with 85354-9 [PoCD];
# 8480-6, 8462-4 [VS]; 8478-0 "Mean blood pressure" (FHIR R4 example map-sitting).
BP_PANEL: Final = Concept(
    "Blood pressure",
    (_loinc("85354-9", "Blood pressure panel with all children optional"), _mdc(150020, "MDC_PRESS_BLD_NONINV")),
)
BP_SYSTOLIC: Final = Concept(
    "Systolic blood pressure", (_loinc("8480-6", "Systolic blood pressure"), _mdc(150021, "MDC_PRESS_BLD_NONINV_SYS"))
)
BP_DIASTOLIC: Final = Concept(
    "Diastolic blood pressure", (_loinc("8462-4", "Diastolic blood pressure"), _mdc(150022, "MDC_PRESS_BLD_NONINV_DIA"))
)
BP_MEAN: Final = Concept(
    "Mean blood pressure", (_loinc("8478-0", "Mean blood pressure"), _mdc(150023, "MDC_PRESS_BLD_NONINV_MEAN"))
)
# MDC_PULS_RATE_NON_INV 2::18474 [x73]; 8867-4 [VS].
PULSE_CUFF: Final = Concept("Pulse rate", (_loinc("8867-4", "Heart rate"), _mdc(149546, "MDC_PULS_RATE_NON_INV")))

# --- pulse oximetry (0x2A5E, 0x2A5F) -----------------------------------------------------------------------------
# MDC_PULS_OXIM_SAT_O2 2::19384 [x73]; 59408-5 and 2708-6 with 150456 [USCore].
SPO2: Final = Concept(
    "Oxygen saturation",
    (
        _loinc("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        _loinc("2708-6", "Oxygen saturation in Arterial blood"),
        _mdc(150456, "MDC_PULS_OXIM_SAT_O2"),
    ),
)
# MDC_PULS_OXIM_PULS_RATE 2::18458 [x73]; 149530 with 8867-4 [PHD].
PULSE_OXIMETER: Final = Concept("Pulse rate", (_loinc("8867-4", "Heart rate"), _mdc(149530, "MDC_PULS_OXIM_PULS_RATE")))

# --- heart rate (0x2A37) -----------------------------------------------------------------------------------------
# MDC_ECG_HEART_RATE 147842 with 8867-4 [PoCD].
HEART_RATE: Final = Concept("Heart rate", (_loinc("8867-4", "Heart rate"), _mdc(147842, "MDC_ECG_HEART_RATE")))

# --- body temperature (0x2A1C) -----------------------------------------------------------------------------------
# MDC_TEMP_BODY 2::19292 [x73]; 8310-5 [VS].
BODY_TEMPERATURE: Final = Concept(
    "Body temperature", (_loinc("8310-5", "Body temperature"), _mdc(150364, "MDC_TEMP_BODY"))
)

# --- weight scale (0x2A9D) ---------------------------------------------------------------------------------------
# MDC_MASS_BODY_ACTUAL 2::57664, MDC_LEN_BODY_ACTUAL 2::57668, MDC_RATIO_MASS_BODY_LEN_SQ 2::57680 [x73] (188736,
# 188740, 188752 also in an IHE PCD-01 weight-scale message); 29463-7, 8302-2 [VS]; 39156-5 with 188752 (a BMI
# profile's pattern coding).
BODY_WEIGHT: Final = Concept("Body weight", (_loinc("29463-7", "Body weight"), _mdc(188736, "MDC_MASS_BODY_ACTUAL")))
BODY_HEIGHT: Final = Concept("Body height", (_loinc("8302-2", "Body height"), _mdc(188740, "MDC_LEN_BODY_ACTUAL")))
BMI: Final = Concept(
    "Body mass index", (_loinc("39156-5", "Body mass index (BMI) [Ratio]"), _mdc(188752, "MDC_RATIO_MASS_BODY_LEN_SQ"))
)

# --- glucose (0x2A18): one concept per GLS sample type and unit kind ----------------------------------------------
# MDC_CONC_GLU_* in partition 2: GEN 28948, CAPILLARY_WHOLEBLOOD 29112, CAPILLARY_PLASMA 29116, VENOUS_WHOLEBLOOD
# 29120, VENOUS_PLASMA 29124, ARTERIAL_WHOLEBLOOD 29128, ARTERIAL_PLASMA 29132, CONTROL 29136, ISF 29140 [x73];
# 160184 confirmed in [HDDT]. LOINC: capillary blood by glucometer 41653-7 / 14743-9 [HDDT]; blood 2339-0 [USCore] /
# 15074-8 (FHIR R4 ObservationDefinition example); serum or plasma 2345-7 / 14749-6 [LIVD]; interstitial fluid
# 99504-3 / 105272-9 [HDDT]. GLS sample types (GLS 1.0 §3.106.2.5): 1 capillary whole blood, 2 capillary plasma,
# 3 venous whole blood, 4 venous plasma, 5 arterial whole blood, 6 arterial plasma, 7 undetermined whole blood,
# 8 undetermined plasma, 9 interstitial fluid, 10 control solution.
_GLU_MASS_CAPILLARY = _loinc("41653-7", "Glucose [Mass/volume] in Capillary blood by Glucometer")
_GLU_MOLES_CAPILLARY = _loinc("14743-9", "Glucose [Moles/volume] in Capillary blood by Glucometer")
_GLU_MASS_BLOOD = _loinc("2339-0", "Glucose [Mass/volume] in Blood")
_GLU_MOLES_BLOOD = _loinc("15074-8", "Glucose [Moles/volume] in Blood")
_GLU_MASS_PLASMA = _loinc("2345-7", "Glucose [Mass/volume] in Serum or Plasma")
_GLU_MOLES_PLASMA = _loinc("14749-6", "Glucose [Moles/volume] in Serum or Plasma")
_GLU_MASS_ISF = _loinc("99504-3", "Glucose [Mass/volume] in Interstitial fluid")
_GLU_MOLES_ISF = _loinc("105272-9", "Glucose [Moles/volume] in Interstitial fluid")

# --- continuous glucose monitoring (0x2AA7) ------------------------------------------------------------------------
# A CGM measures glucose in interstitial fluid, in mg/dL (CGMS): MDC_CONC_GLU_ISF and LOINC 99504-3 [HDDT], the codes
# of a strip meter's interstitial-fluid sample (type 9), with the method saying it came from a continuous monitor.
CGM_GLUCOSE: Final = Concept(
    "Glucose, interstitial fluid, continuous glucose monitor", (_GLU_MASS_ISF, _mdc(160212, "MDC_CONC_GLU_ISF"))
)
CGM_METHOD: Final = "continuous glucose monitoring (Bluetooth CGM Service 0x181F)"
"""``Observation.method`` text of a CGM reading (what tells it from a strip's interstitial-fluid reading)."""

GLUCOSE_CONTROL_SOLUTION: Final = 10
"""GLS sample type 10: a control-solution test of the meter, not the resident's blood (never exported)."""

# sample type -> (text, MDC code, LOINC for kg/L, LOINC for mol/L)
_GLUCOSE_TYPES: Final[dict[int | None, tuple[str, Code, Code, Code]]] = {
    1: (
        "Glucose, capillary whole blood",
        _mdc(160184, "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD"),
        _GLU_MASS_CAPILLARY,
        _GLU_MOLES_CAPILLARY,
    ),
    2: (
        "Glucose, capillary plasma",
        _mdc(160188, "MDC_CONC_GLU_CAPILLARY_PLASMA"),
        _GLU_MASS_PLASMA,
        _GLU_MOLES_PLASMA,
    ),
    3: (
        "Glucose, venous whole blood",
        _mdc(160192, "MDC_CONC_GLU_VENOUS_WHOLEBLOOD"),
        _GLU_MASS_BLOOD,
        _GLU_MOLES_BLOOD,
    ),
    4: ("Glucose, venous plasma", _mdc(160196, "MDC_CONC_GLU_VENOUS_PLASMA"), _GLU_MASS_PLASMA, _GLU_MOLES_PLASMA),
    5: (
        "Glucose, arterial whole blood",
        _mdc(160200, "MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD"),
        _GLU_MASS_BLOOD,
        _GLU_MOLES_BLOOD,
    ),
    6: ("Glucose, arterial plasma", _mdc(160204, "MDC_CONC_GLU_ARTERIAL_PLASMA"), _GLU_MASS_PLASMA, _GLU_MOLES_PLASMA),
    7: ("Glucose, whole blood", _mdc(160020, "MDC_CONC_GLU_GEN"), _GLU_MASS_BLOOD, _GLU_MOLES_BLOOD),
    8: ("Glucose, plasma", _mdc(160020, "MDC_CONC_GLU_GEN"), _GLU_MASS_PLASMA, _GLU_MOLES_PLASMA),
    9: ("Glucose, interstitial fluid", _mdc(160212, "MDC_CONC_GLU_ISF"), _GLU_MASS_ISF, _GLU_MOLES_ISF),
    None: ("Glucose", _mdc(160020, "MDC_CONC_GLU_GEN"), _GLU_MASS_BLOOD, _GLU_MOLES_BLOOD),
}


def glucose_concept(sample_type: object, si_unit: str) -> Concept:
    """The code of a glucose reading: by its GLS sample type (absent or reserved: generic, in blood) and by whether
    the meter sent a mass (``kg/L``) or a substance (``mol/L``) concentration.

    Raises:
        ValueError: ``sample_type`` is the control solution (not a reading of the resident).
    """
    if sample_type == GLUCOSE_CONTROL_SOLUTION:
        raise ValueError("a control-solution test is not a reading of the resident")
    key = sample_type if isinstance(sample_type, int) and sample_type in _GLUCOSE_TYPES else None
    text, mdc, mass, moles = _GLUCOSE_TYPES[key]
    return Concept(text, (moles if si_unit == "mol/L" else mass, mdc))


def glucose_mdc_codes() -> frozenset[str]:
    """Every MDC code a glucose Observation may carry."""
    return frozenset(mdc.code for _, mdc, _, _ in _GLUCOSE_TYPES.values())


# --- units: the unit word of a decoded value (protocols/README.md) -> UCUM code ------------------------------------
UCUM_UNITS: Final[dict[str, str]] = {
    "mmHg": "mm[Hg]",
    "kPa": "kPa",
    "kg/L": "kg/L",
    "mol/L": "mol/L",
    "C": "Cel",
    "F": "[degF]",
    "kg": "kg",
    "lb": "[lb_av]",
    "m": "m",
    "in": "[in_i]",
    "%": "%",
    "/min": "/min",
    "kg/m2": "kg/m2",
    "mg/dL": "mg/dL",
}
DECODED_UNITS: Final[dict[str, str]] = {ucum: word for word, ucum in UCUM_UNITS.items()}


class DeviceType(enum.Enum):
    """A meter's kind as a FHIR Device type: MDC device specialisation (partition 8) [PHD DeviceTypes11073MDC]."""

    BLOOD_PRESSURE = ("blood pressure monitor", 528391, "MDC_DEV_SPEC_PROFILE_BP")  # 8::4103
    GLUCOSE = ("glucose meter", 528401, "MDC_DEV_SPEC_PROFILE_GLUCOSE")  # 8::4113
    OXIMETER = ("pulse oximeter", 528388, "MDC_DEV_SPEC_PROFILE_PULS_OXIM")  # 8::4100, in the PHD value set
    THERMOMETER = ("thermometer", 528392, "MDC_DEV_SPEC_PROFILE_TEMP")  # 8::4104
    SCALE = ("weight scale", 528399, "MDC_DEV_SPEC_PROFILE_SCALE")  # 8::4111
    # 8::4137 = 8 * 65536 + 4137 = 528425 (528409 is 8::4121, the CGM's: [HDDT] and the x73 device-specialisation
    # tables list MDC_DEV_SPEC_PROFILE_CGM 8::4121 and MDC_DEV_SPEC_PROFILE_HF_CARDIO 8::4137).
    HEART_RATE = ("heart rate monitor", 528425, "MDC_DEV_SPEC_PROFILE_HF_CARDIO")  # 8::4137
    CGM = ("continuous glucose monitor", 528409, "MDC_DEV_SPEC_PROFILE_CGM")  # 8::4121 [HDDT]
    PENDANT = ("panic pendant", None, None)  # carehub's own device: no MDC specialisation

    @property
    def text(self) -> str:
        """The kind in words."""
        text: str = self.value[0]
        return text

    def to_json(self) -> dict[str, object]:
        """The FHIR ``CodeableConcept`` of the Device's ``type``."""
        _, code, reference_id = self.value
        if code is None:
            return {"text": self.text}
        return {"coding": [_mdc(code, reference_id).to_json()], "text": self.text}
