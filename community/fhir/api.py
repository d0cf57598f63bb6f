"""A read-only HL7 FHIR R4 API over the platform's stored records (issue 18 item 7).

:func:`fhir_app` returns an :class:`aiohttp.web.Application`; serve it alone or mount it under a prefix::

    console.add_subapp("/fhir", fhir_app(storage))

Links in responses are built from the request's own URL, so they carry whatever prefix the app is mounted under.
Every request reads the stored records (``Storage.readings()``) and maps them as the bulk export does
(:func:`community.fhir.resources.build_export`); the mapping is reused while no record was added.

Interactions (``application/fhir+json``):

- ``GET /Observation?patient=&code=&date=&_count=&_offset=``: ``patient`` a Patient id (``Patient/<id>`` or
  ``<id>``), ``code`` a token (``code`` or ``system|code``, comma-separated for any of them), ``date`` a prefixed
  date or dateTime with zone (``ge2026-03-02``, ``lt2026-03-02T10:00:00+08:00``; prefixes eq ne gt lt ge le; may
  repeat), all ANDed; a ``searchset`` Bundle with ``total`` and ``self``/``next``/``previous`` links.
- ``GET /Patient``, ``/Device``, ``/Communication``, ``/Flag`` (``_id``, ``identifier``, and ``patient`` for
  Device, Communication and Flag), same paging; ``GET /<Type>/<id>`` reads one resource.
- ``GET /metadata``: the ``CapabilityStatement`` of these interactions.
- ``_count`` 0..1000 (default 50), ``_offset`` >= 0. An unknown or malformed parameter is a 400 with an
  ``OperationOutcome``; an unknown id or resource type a 404 with one; a database failure or a stored record that
  cannot be mapped (:class:`community.fhir.mapping.ExportError`) a 500 with one.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from community.fhir.mapping import ExportError
from community.fhir.resources import RESOURCE_TYPES, FhirExport, build_export
from community.storage import Storage, StorageError, StoredReading

__all__ = ["DEFAULT_COUNT", "FHIR_JSON", "MAX_COUNT", "capability_statement", "fhir_app"]

FHIR_JSON: Final = "application/fhir+json"
DEFAULT_COUNT: Final = 50
MAX_COUNT: Final = 1000
_PAGING: Final = frozenset({"_count", "_offset", "_format"})
_PARAMS: Final[Mapping[str, frozenset[str]]] = {
    "Observation": frozenset({"_id", "identifier", "patient", "subject", "code", "date"}),
    "Patient": frozenset({"_id", "identifier"}),
    "Device": frozenset({"_id", "identifier", "patient"}),
    "Communication": frozenset({"_id", "identifier", "patient", "subject"}),
    "Flag": frozenset({"_id", "identifier", "patient", "subject"}),
}
_PREFIXES: Final = ("eq", "ne", "gt", "lt", "ge", "le")
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(slots=True)
class _Source:
    """The storage an app serves and the mapping of its records, kept while no record was added."""

    storage: Storage
    key: tuple[int, str, str] | None = None
    export: FhirExport | None = None

    async def export_now(self) -> FhirExport:
        readings: list[StoredReading] = await self.storage.readings()
        last = readings[-1] if readings else None
        key = (len(readings), "" if last is None else last.hub, "" if last is None else last.record_id)
        if self.export is None or key != self.key:
            self.key, self.export = key, build_export(readings)
        return self.export


_SOURCE: Final = web.AppKey("fhir_source", _Source)


class _BadRequestError(Exception):
    """A search the API cannot answer: the parameter and why (a 400 OperationOutcome)."""


def _outcome(status: int, code: str, diagnostics: str) -> web.Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
    return web.json_response(body, status=status, content_type=FHIR_JSON)


@dataclass(frozen=True, slots=True)
class _DateFilter:
    """``date=<prefix><value>``: the value's range [low, high) and how an instant must relate to it."""

    prefix: str
    low: _dt.datetime
    high: _dt.datetime

    @classmethod
    def parse(cls, text: str) -> _DateFilter:
        prefix = text[:2] if text[:2] in _PREFIXES else "eq"
        value = text[2:] if text[:2] in _PREFIXES else text
        if not value[:1].isdigit():
            raise _BadRequestError(f"date={text}: prefixes are {', '.join(_PREFIXES)}")
        try:
            if _DATE.fullmatch(value):
                low = _dt.datetime.fromisoformat(value).replace(tzinfo=_dt.UTC)
                return cls(prefix, low, low + _dt.timedelta(days=1))
            at = _dt.datetime.fromisoformat(value)
        except ValueError:
            raise _BadRequestError(f"date={text}: not a FHIR date (YYYY-MM-DD) or dateTime") from None
        if at.utcoffset() is None:
            raise _BadRequestError(f"date={text}: a dateTime needs its time zone (Z or +hh:mm)")
        return cls(prefix, at, at + _dt.timedelta(microseconds=1))

    def matches(self, at: _dt.datetime) -> bool:
        inside = self.low <= at < self.high
        return {
            "eq": inside,
            "ne": not inside,
            "gt": at >= self.high,
            "lt": at < self.low,
            "ge": at >= self.low,
            "le": at < self.high,
        }[self.prefix]


def _ref_id(value: str, resource_type: str) -> str:
    return value.removeprefix(f"{resource_type}/")


def _identifier_match(resource: Mapping[str, Any], token: str) -> bool:
    system, bar, value = token.rpartition("|")
    return any(
        i.get("value") == value and (not bar or i.get("system") == system) for i in resource.get("identifier", [])
    )


def _codes(resource: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in resource.get("code", {}).get("coding", [])}


def _code_match(resource: Mapping[str, Any], tokens: Sequence[str]) -> bool:
    codes = _codes(resource)
    for token in tokens:
        system, bar, code = token.rpartition("|")
        if any(c == code and (not bar or s == system) for s, c in codes):
            return True
    return False


def _patient_of(resource: Mapping[str, Any]) -> str | None:
    ref = resource.get("subject") or resource.get("patient") or {}
    reference = ref.get("reference")
    return reference if isinstance(reference, str) else None


@dataclass(frozen=True, slots=True)
class _Filter:
    """One search parameter's value: ``_id``, ``identifier``, ``patient``, ``code`` or ``date``."""

    name: str
    tokens: tuple[str, ...]
    date: _DateFilter | None = None

    @classmethod
    def parse(cls, name: str, value: str) -> _Filter:
        if not value:
            raise _BadRequestError(f"{name}= is empty")
        if name == "date":
            return cls(name, (value,), _DateFilter.parse(value))
        if name in ("patient", "subject"):
            return cls("patient", (f"Patient/{_ref_id(value, 'Patient')}",))
        return cls(name, tuple(value.split(",")))

    def matches(self, resource: Mapping[str, Any]) -> bool:
        if self.date is not None:
            return self.date.matches(_dt.datetime.fromisoformat(resource["effectiveDateTime"]))
        if self.name == "_id":
            return resource["id"] in self.tokens
        if self.name == "patient":
            return _patient_of(resource) == self.tokens[0]
        if self.name == "code":
            return _code_match(resource, self.tokens)
        return any(_identifier_match(resource, token) for token in self.tokens)


def _filters(resource_type: str, query: Mapping[str, Sequence[str]]) -> list[_Filter]:
    allowed = _PARAMS[resource_type] | _PAGING
    filters: list[_Filter] = []
    for name, values in query.items():
        if name not in allowed:
            supported = ", ".join(sorted(allowed))
            raise _BadRequestError(f"{resource_type} search parameter {name!r} is not supported ({supported})")
        if name == "_format":
            if values not in (["json"], [FHIR_JSON], ["application/json"]):
                raise _BadRequestError("_format: only JSON is served")
        elif name not in _PAGING:
            filters.extend(_Filter.parse(name, value) for value in values)
    return filters


def _int_param(query: Mapping[str, Sequence[str]], name: str, default: int, high: int | None) -> int:
    values = query.get(name, [])
    if not values:
        return default
    if len(values) > 1:
        raise _BadRequestError(f"{name} is given more than once")
    text = values[0]
    if not text.isdigit() or (high is not None and int(text) > high):
        limit = f"0..{high}" if high is not None else ">= 0"
        raise _BadRequestError(f"{name}={text!r}: expected an integer {limit}")
    return int(text)


def _bundle(request: web.Request, matches: Sequence[Mapping[str, Any]], count: int, offset: int) -> dict[str, Any]:
    def page(at: int) -> str:
        return str(request.url.update_query({"_count": str(count), "_offset": str(at)}))

    links = [{"relation": "self", "url": page(offset)}]
    if count and offset + count < len(matches):
        links.append({"relation": "next", "url": page(offset + count)})
    if count and offset > 0:
        links.append({"relation": "previous", "url": page(max(0, offset - count))})
    base = str(request.url.with_query(None)).removesuffix("/")
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(matches),
        "link": links,
        "entry": [
            {"fullUrl": f"{base}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in matches[offset : offset + count]
        ],
    }


def _resource_type(request: web.Request) -> str | None:
    resource_type = request.match_info["type"]
    return resource_type if resource_type in RESOURCE_TYPES else None


async def _load(request: web.Request) -> FhirExport | web.Response:
    """The app's records as FHIR, or the 500 OperationOutcome saying why they cannot be served."""
    try:
        return await request.app[_SOURCE].export_now()
    except StorageError as exc:
        return _outcome(500, "exception", f"the platform database failed: {exc}")
    except ExportError as exc:
        return _outcome(500, "exception", f"a stored record cannot be served as FHIR: {exc}")


async def _search(request: web.Request) -> web.Response:
    resource_type = _resource_type(request)
    if resource_type is None:
        return _outcome(404, "not-supported", f"resource type {request.match_info['type']!r} is not served here")
    query = {name: request.query.getall(name) for name in request.query}
    try:
        filters = _filters(resource_type, query)
        count = _int_param(query, "_count", DEFAULT_COUNT, MAX_COUNT)
        offset = _int_param(query, "_offset", 0, None)
    except _BadRequestError as exc:
        return _outcome(400, "invalid", str(exc))
    export = await _load(request)
    if isinstance(export, web.Response):
        return export
    matches = [r for r in export.resources[resource_type] if all(f.matches(r) for f in filters)]
    return web.json_response(_bundle(request, matches, count, offset), content_type=FHIR_JSON)


async def _read(request: web.Request) -> web.Response:
    resource_type = _resource_type(request)
    if resource_type is None:
        return _outcome(404, "not-supported", f"resource type {request.match_info['type']!r} is not served here")
    wanted = request.match_info["id"]
    export = await _load(request)
    if isinstance(export, web.Response):
        return export
    for resource in export.resources[resource_type]:
        if resource["id"] == wanted:
            return web.json_response(resource, content_type=FHIR_JSON)
    return _outcome(404, "not-found", f"{resource_type}/{wanted} is not known")


_PARAM_TYPES: Final = {
    "_id": "token",
    "identifier": "token",
    "patient": "reference",
    "subject": "reference",
    "code": "token",
    "date": "date",
}


def capability_statement() -> dict[str, Any]:
    """What this API serves, as a FHIR ``CapabilityStatement`` (``GET /metadata``)."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-03",
        "kind": "instance",
        "implementation": {"description": "carehub community platform: read-only FHIR R4 API (docs/fhir.md)"},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {
                        "type": resource_type,
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": [
                            {"name": name, "type": _PARAM_TYPES[name]} for name in sorted(_PARAMS[resource_type])
                        ],
                    }
                    for resource_type in RESOURCE_TYPES
                ],
            }
        ],
    }


async def _metadata(_request: web.Request) -> web.Response:
    return web.json_response(capability_statement(), content_type=FHIR_JSON)


def fhir_app(storage: Storage) -> web.Application:
    """The read-only FHIR R4 API over ``storage`` (see the module docstring for the interactions).

    Args:
        storage: an open platform storage (:class:`community.storage.SqliteStorage` or any :class:`Storage`); the
            caller opens and closes it.

    Returns:
        An application to run (``web.run_app``) or to mount (``parent.add_subapp("/fhir", fhir_app(storage))``).
    """
    app = web.Application()
    app[_SOURCE] = _Source(storage)
    app.router.add_get("/metadata", _metadata)
    app.router.add_get("/{type}", _search)
    app.router.add_get("/{type}/{id}", _read)
    return app
