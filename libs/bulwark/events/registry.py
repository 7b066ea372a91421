"""Event types and their JSON Schemas, compiled once.

Schemas live in `schemas/<type>.v<version>.json` beside this module (the envelope's own schema is
`envelope.v1.json`). Services may register more types from their own folders. Validation messages name
the field and the rule, never the value, because values may be personal data.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import fastjsonschema
import orjson

from bulwark.errors import Reason

_FILE = re.compile(r"^(?P<type>[a-z][a-z0-9_.-]*)\.v(?P<version>\d+)\.json$")


def _message(exc: fastjsonschema.JsonSchemaValueException, prefix: str) -> str:
    # fastjsonschema names the path as "data.a.b"; keep the path and the rule, drop anything else.
    path = (exc.name or "data").replace("data", prefix, 1)
    rule = exc.rule or "schema"
    definition = exc.rule_definition
    if rule == "required":
        present = exc.value if isinstance(exc.value, dict) else {}
        missing = [name for name in definition if name not in present]
        return f"{path}: missing required field(s) {', '.join(missing)}"
    if rule == "type":
        return f"{path}: wrong type, expected {definition}"
    if rule == "additionalProperties":
        return f"{path}: has a field the schema does not allow"
    if rule in ("minimum", "maximum", "minLength", "maxLength", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{path}: violates {rule}={definition}"
    if rule == "enum":
        return f"{path}: must be one of {definition}"
    return f"{path}: violates {rule}"


class EventTypeRegistry:
    """Known event types, their supported schema versions, and compiled validators."""

    def __init__(self) -> None:
        self._validators: dict[tuple[str, int], Callable[[Any], Any]] = {}
        self._schemas: dict[tuple[str, int], dict[str, Any]] = {}
        self._envelope = self._compile(self._read_builtin("envelope.v1.json"))

    @staticmethod
    def _read_builtin(name: str) -> dict[str, Any]:
        return orjson.loads(resources.files("bulwark.events").joinpath("schemas", name).read_bytes())

    @staticmethod
    def _compile(schema: dict[str, Any]) -> Callable[[Any], Any]:
        return fastjsonschema.compile(schema, use_default=False, detailed_exceptions=True)

    @classmethod
    def default(cls) -> EventTypeRegistry:
        """A registry with every built-in schema loaded."""
        reg = cls()
        for entry in resources.files("bulwark.events").joinpath("schemas").iterdir():
            if entry.name != "envelope.v1.json" and _FILE.match(entry.name):
                reg.register_file(entry.name, orjson.loads(entry.read_bytes()))
        return reg

    def register_file(self, name: str, schema: dict[str, Any]) -> None:
        """Register a schema whose file name is `<type>.v<version>.json`."""
        m = _FILE.match(name)
        if not m:
            raise ValueError(f"schema file {name!r} must be named <type>.v<version>.json")
        self.register(m["type"], int(m["version"]), schema)

    def register_folder(self, folder: Path) -> None:
        """Register every `<type>.v<version>.json` in `folder`."""
        for path in sorted(folder.glob("*.json")):
            self.register_file(path.name, orjson.loads(path.read_bytes()))

    def register(self, event_type: str, version: int, schema: dict[str, Any]) -> None:
        """Register one (type, version); registering the same pair twice is an error."""
        key = (event_type, version)
        if key in self._validators:
            raise ValueError(f"event type {event_type} v{version} is already registered")
        self._validators[key] = self._compile(schema)
        self._schemas[key] = schema

    def types(self) -> dict[str, list[int]]:
        """Each known type with its supported versions."""
        out: dict[str, list[int]] = {}
        for event_type, version in sorted(self._validators):
            out.setdefault(event_type, []).append(version)
        return out

    def schema(self, event_type: str, version: int) -> dict[str, Any]:
        """The JSON Schema of (type, version)."""
        return self._schemas[(event_type, version)]

    def validate_envelope(self, doc: dict[str, Any], *, event_id: str | None, event_type: str | None) -> None:
        """Check the envelope fields; raise `DecodeError` naming the field."""
        from bulwark.events.envelope import DecodeError

        try:
            self._envelope(doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise DecodeError(Reason.SCHEMA_VIOLATION, "envelope", _message(exc, "envelope"),
                              event_id=event_id, event_type=event_type) from None

    def validate_payload(self, event_type: str, version: int, payload: Any, *, event_id: str | None = None) -> None:
        """Check `payload` against the schema of (type, version)."""
        from bulwark.events.envelope import DecodeError

        validator = self._validators.get((event_type, version))
        if validator is None:
            versions = self.types().get(event_type)
            if versions is None:
                raise DecodeError(Reason.UNKNOWN_EVENT_TYPE, "schema",
                                  f"unknown event type {event_type!r}; known types: {', '.join(self.types())}",
                                  event_id=event_id, event_type=event_type)
            raise DecodeError(Reason.UNSUPPORTED_SCHEMA_VERSION, "schema",
                              f"{event_type} schema_version {version} is not supported; supported: {versions}",
                              event_id=event_id, event_type=event_type)
        try:
            validator(payload)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise DecodeError(Reason.SCHEMA_VIOLATION, "schema", _message(exc, "payload"),
                              event_id=event_id, event_type=event_type) from None
