"""HL7 FHIR R4 on the community platform (issue 18 items 6 and 7): stored records as FHIR resources
(:mod:`community.fhir.mapping`, :mod:`community.fhir.resources`; read back by :mod:`community.fhir.readback`), a bulk
NDJSON export (:mod:`community.fhir.ndjson`)
and a read-only FHIR API (:func:`community.fhir.api.fhir_app`). ``docs/fhir.md`` has the mapping table."""
