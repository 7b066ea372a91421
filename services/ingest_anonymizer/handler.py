"""The anonymizer's handler: one raw event in, one clean event out (or a dead letter with the reason)."""

from __future__ import annotations

from typing import Iterable, Sequence

from bulwark.bus import Context, Output
from bulwark.crypto.subjects import SubjectCipher
from bulwark.crypto.tokens import Pseudonymizer
from bulwark.errors import BulwarkError, Reason
from bulwark.events import DecodeError, Envelope, EventTypeRegistry
from bulwark.settings import CommonSettings
from services.ingest_anonymizer.operators import EventPlan, OperatorKit
from bulwark.pii import BUILTIN_RECOGNIZERS, PatternRecognizer, TextScanner
from services.ingest_anonymizer.policy import Policy

SERVICE = "ingest-anonymizer"


def build_scanner(policy: Policy) -> TextScanner:
    """The built-in recognizers plus the policy's extra patterns."""
    extra = [PatternRecognizer.from_config(p.model_dump()) for p in policy.text_patterns]
    return TextScanner([*BUILTIN_RECOGNIZERS, *extra])


class AnonymizerHandler:
    """Applies the policy to each raw event; the clean event is keyed by the subject's token."""

    name = SERVICE

    def __init__(self, settings: CommonSettings, policy: Policy, registry: EventTypeRegistry,
                 pseudonymizer: Pseudonymizer, subjects: SubjectCipher) -> None:
        self.topics = [settings.topics.events_raw]
        self.event_types = set(policy.event_types)
        self._out_topic = settings.topics.events_clean
        self._registry = registry
        self._pseudonymizer = pseudonymizer
        self._subjects = subjects
        kit = OperatorKit(pseudonymizer, subjects, build_scanner(policy))
        self._plans = {name: EventPlan(name, ep, kit, policy.version) for name, ep in policy.event_types.items()}

    def prepare(self, events: Sequence[Envelope]) -> None:
        """Fetch (or create) the subject keys of a polled batch in two Redis round trips, not one or two per
        new subject; an event this skips (bad subject, Redis unreachable) meets its problem in `handle`."""
        subjects = []
        for event in events:
            plan = self._plans.get(event.type)
            value = event.payload.get(plan.subject_field) if plan is not None and plan.encrypts else None
            if isinstance(value, str) and value:
                subjects.append(self._pseudonymizer.token(value, domain="subject"))
        try:
            self._subjects.prefetch(subjects)
        except BulwarkError:
            pass

    def handle(self, event: Envelope, ctx: Context) -> Iterable[Output]:
        """Anonymize one event; content problems raise non-retryable errors (dead-lettered)."""
        plan = self._plans[event.type]
        if event.schema_version not in plan.schema_versions:
            raise DecodeError(Reason.UNSUPPORTED_SCHEMA_VERSION, "schema",
                              f"the policy covers {event.type} versions {sorted(plan.schema_versions)}, "
                              f"not {event.schema_version}", event_id=event.id, event_type=event.type)
        subject_value = event.payload.get(plan.subject_field)
        if not isinstance(subject_value, str) or not subject_value:
            raise BulwarkError(Reason.SCHEMA_VIOLATION, f"payload.{plan.subject_field}: the subject field is "
                               "missing or not a string")
        subject = self._pseudonymizer.token(subject_value, domain="subject")
        clean = plan.apply(event.payload, subject)
        try:
            # The output schema is the last line of defence: nothing it does not allow leaves this service.
            self._registry.validate_payload(plan.output_type, plan.output_version, clean, event_id=event.id)
        except DecodeError as exc:
            raise BulwarkError(Reason.POLICY_VIOLATION, f"the policy's output breaks its schema: {exc.message}") from None
        summary = clean["anonymization"]
        ctx.span.set_attributes({"bulwark.anon.dropped": summary["dropped"], "bulwark.anon.unknown": summary["unknown"],
                                 "bulwark.anon.findings": sum(summary["findings"].values())})
        yield Output(self._out_topic, event.derive(plan.output_type, clean, source=SERVICE, subject=subject,
                                                   schema_version=plan.output_version))
