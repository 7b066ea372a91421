"""The anonymization policy: a versioned YAML file mapping each field of each event type to an action.

    version: 3                       # bump on every change; stamped on every clean event
    event_types:
      payment.transaction:
        schema_versions: [1]         # input versions this policy covers
        output: {type: payment.transaction.clean, schema_version: 1}
        subject: {field: customer_id}     # whose data it is: per-subject keys, the clean record key
        default_action: drop         # for fields the policy does not name (drop unless told otherwise)
        fields:
          amount: keep
          email: encrypt
          card_number: {action: mask, keep_last: 4}
          note: {action: text, replace: token}
    text_patterns:                   # extra free-text recognizers
      - {entity: EMPLOYEE_ID, patterns: ['EMP-\\d{6}'], context: [employee]}

Actions: keep, drop, redact, mask (keep last N), pseudonymize (keyed HMAC token), encrypt (AES-GCM under the
subject's key), generalize (bucket a number, truncate a date, or an IP to its network prefix), text (find
personal data in free text and replace each finding with a typed placeholder or token).

The policy is validated at start twice: its own shape (pydantic; errors name the path of the bad key) and
against the event schemas (every named field exists in the input schema, every produced field is allowed by
the output schema, every required output field is produced), so a typo or a leak is a start-up error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bulwark.errors import BulwarkError, Reason
from bulwark.events import EventTypeRegistry

DEFAULT_POLICY = Path(__file__).with_name("policies") / "default.yaml"


class PolicyError(BulwarkError):
    """The policy file is malformed or disagrees with the event schemas; the message names the key."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.FAILED_PRECONDITION, message)


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeepRule(_Rule):
    """Pass the value through unchanged."""

    action: Literal["keep"]


class DropRule(_Rule):
    """Remove the field."""

    action: Literal["drop"]


class RedactRule(_Rule):
    """Replace the value with a fixed string (the field stays, its content does not)."""

    action: Literal["redact"]
    replacement: str = "[REDACTED]"


class MaskRule(_Rule):
    """Replace every letter and digit but the last `keep_last` with `char`; separators stay."""

    action: Literal["mask"]
    keep_last: int = Field(4, ge=0, le=8)
    char: str = Field("*", min_length=1, max_length=1)


class PseudonymizeRule(_Rule):
    """A keyed HMAC token, stable per key and domain: joins and per-subject features still work."""

    action: Literal["pseudonymize"]
    domain: str | None = None


class EncryptRule(_Rule):
    """AES-GCM under the subject's own key: reversible by an audited `bulwark reveal`, erased by forget."""

    action: Literal["encrypt"]


class GeneralizeRule(_Rule):
    """Coarsen: a number down to a multiple of `bucket`, a date to its year or month, an IP to its prefix."""

    action: Literal["generalize"]
    bucket: float | None = Field(None, gt=0)
    date: Literal["year", "month"] | None = None
    ipv4_prefix: int | None = Field(None, ge=0, le=32)
    ipv6_prefix: int | None = Field(None, ge=0, le=128)

    @model_validator(mode="after")
    def _one_kind(self) -> GeneralizeRule:
        kinds = [self.bucket is not None, self.date is not None,
                 self.ipv4_prefix is not None or self.ipv6_prefix is not None]
        if sum(kinds) != 1:
            raise ValueError("generalize needs exactly one of: bucket, date, ipv4_prefix/ipv6_prefix")
        return self


class TextRule(_Rule):
    """Scan free text; replace each finding with `<ENTITY>` (placeholder) or `<ENTITY:tok_…>` (token).

    `known` names fields of the same event whose values are also removed from the text wherever they
    appear (a customer's name in a note, which no pattern can find)."""

    action: Literal["text"]
    replace: Literal["placeholder", "token"] = "placeholder"
    known: list[str] = Field(default_factory=list)


FieldRule = Annotated[
    Union[KeepRule, DropRule, RedactRule, MaskRule, PseudonymizeRule, EncryptRule, GeneralizeRule, TextRule],
    Field(discriminator="action"),
]


class OutputSpec(_Rule):
    """The clean event's type and schema version."""

    type: str
    schema_version: int = Field(1, ge=1)


class SubjectSpec(_Rule):
    """The field naming whose data the event is."""

    field: str


class EventPolicy(_Rule):
    """How one event type is anonymized."""

    schema_versions: list[int] = Field(min_length=1)
    output: OutputSpec
    subject: SubjectSpec
    default_action: Literal["drop", "redact"] = "drop"
    fields: dict[str, FieldRule]

    @field_validator("fields", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        # `email: encrypt` is short for `email: {action: encrypt}`.
        if isinstance(value, dict):
            return {k: {"action": v} if isinstance(v, str) else v for k, v in value.items()}
        return value


class TextPattern(_Rule):
    """An extra free-text recognizer: entity name, regexes, optional context words and validator."""

    entity: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")
    patterns: list[str] = Field(min_length=1)
    context: list[str] = Field(default_factory=list)
    validator: str | None = None
    score: float = Field(0.85, gt=0, le=1)


class Policy(_Rule):
    """The whole policy file."""

    version: int = Field(ge=1)
    event_types: dict[str, EventPolicy] = Field(min_length=1)
    text_patterns: list[TextPattern] = Field(default_factory=list)


def _where(loc: tuple[Any, ...]) -> str:
    # Drop pydantic's union-tag segments (e.g. 'mask') so the path reads like the YAML.
    parts = [str(p) for p in loc if not (isinstance(p, str) and p in _ACTIONS)]
    return ".".join(parts)


_ACTIONS = {"keep", "drop", "redact", "mask", "pseudonymize", "encrypt", "generalize", "text"}


def parse_policy(doc: Any, *, source: str = "policy") -> Policy:
    """Validate a parsed YAML document as a `Policy`; errors name each bad key's path."""
    try:
        return Policy.model_validate(doc)
    except ValidationError as exc:
        problems = [f"{_where(e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()]
        raise PolicyError(f"{source} is invalid: " + "; ".join(problems)) from None


def load_policy(path: Path, registry: EventTypeRegistry) -> Policy:
    """Read, validate and check a policy file against the event schemas."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read policy {path}: {exc.strerror}; set BULWARK_ANONYMIZER_POLICY") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PolicyError(f"policy {path} is not valid YAML{where}") from None
    policy = parse_policy(doc, source=f"policy {path}")
    check_against_schemas(policy, registry, source=str(path))
    return policy


def check_against_schemas(policy: Policy, registry: EventTypeRegistry, *, source: str = "policy") -> None:
    """The policy agrees with the input and output schemas, or `PolicyError` says where it does not."""
    known = registry.types()
    problems: list[str] = []
    for name, ep in policy.event_types.items():
        where = f"event_types.{name}"
        for version in ep.schema_versions:
            if version not in known.get(name, []):
                problems.append(f"{where}: no input schema {name} v{version} (known: {known.get(name, [])})")
        out = ep.output
        if out.schema_version not in known.get(out.type, []):
            problems.append(f"{where}.output: no schema {out.type} v{out.schema_version}")
            continue
        out_schema = registry.schema(out.type, out.schema_version)
        allowed = set(out_schema.get("properties", {}))
        for version in [v for v in ep.schema_versions if v in known.get(name, [])]:
            in_props = set(registry.schema(name, version).get("properties", {}))
            for field, rule in ep.fields.items():
                if field not in in_props:
                    problems.append(f"{where}.fields.{field}: not a field of {name} v{version}")
                for known in getattr(rule, "known", []):
                    if known not in in_props:
                        problems.append(f"{where}.fields.{field}.known: {known!r} is not a field of {name} v{version}")
            if ep.subject.field not in in_props:
                problems.append(f"{where}.subject.field: {ep.subject.field!r} is not a field of {name} v{version}")
        produced = {f for f, rule in ep.fields.items() if rule.action != "drop"} | {"anonymization"}
        for field in sorted(produced - allowed):
            problems.append(f"{where}.fields.{field}: produced, but {out.type} v{out.schema_version} does not allow it")
        for field in sorted(set(out_schema.get("required", [])) - produced):
            problems.append(f"{where}: {out.type} v{out.schema_version} requires {field!r}, which no rule produces")
        if ep.default_action == "redact" and out_schema.get("additionalProperties") is False:
            problems.append(f"{where}.default_action: redact keeps unknown fields, which {out.type} does not allow")
    if problems:
        raise PolicyError(f"policy {source} disagrees with the event schemas: " + "; ".join(problems))
