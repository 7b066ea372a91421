"""`bulwark reveal` and `bulwark forget`: re-identify one encrypted field (audited), forget a subject.

Both need key material ordinary services do not hold (the `field` ring; forget also the `pseudonym` ring
to turn a customer id into its token), and both write an audit event with who and why before acting.
"""

from __future__ import annotations

import click

from bulwark.cli.output import emit


def _find_clean_event(settings, event_id: str, partition: int | None, offset: int | None):  # noqa: ANN001, ANN202
    from bulwark.bus.reader import read_topic

    start = {partition: offset} if partition is not None and offset is not None else None
    for rec, event in read_topic(settings, settings.topics.events_clean, start=start, idle_ms=1000):
        if event is not None and event.id == event_id:
            return event
        if start is not None and rec.partition == partition:
            break
    return None


@click.command()
@click.argument("event_id")
@click.argument("field")
@click.option("--reason", required=True, help="Why this re-identification is needed (audited).")
@click.option("--partition", type=int, default=None, help="Partition of the clean event (faster lookup).")
@click.option("--offset", type=int, default=None, help="Offset of the clean event (with --partition).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def reveal(event_id: str, field: str, reason: str, partition: int | None, offset: int | None, as_json: bool) -> None:
    """Decrypt FIELD of the clean event EVENT_ID. Needs the field key ring; audited with who and why."""
    from bulwark.audit import audit_event, current_actor, publish_audit
    from bulwark.cli.main import cli_settings
    from bulwark.crypto import load_ring
    from bulwark.crypto.keys import RING_FIELD
    from bulwark.crypto.subjects import SubjectCipher, SubjectForgottenError, SubjectKeyStore
    from bulwark.errors import BulwarkError, NotFoundError, Reason
    from bulwark.redis_client import make_redis
    from bulwark.redis_keys import RedisKeys

    if len(reason.strip()) < 5:
        raise BulwarkError(Reason.INVALID_ARGUMENT, "--reason must say why (at least 5 characters)")
    settings = cli_settings()
    ring = load_ring(RING_FIELD, settings.keys_path)
    event = _find_clean_event(settings, event_id, partition, offset)
    if event is None:
        raise NotFoundError(f"no event {event_id} in {settings.topics.events_clean}")
    value = event.payload.get(field)
    if not isinstance(value, str) or not value.startswith("enc:v1:"):
        raise BulwarkError(Reason.INVALID_ARGUMENT, f"field {field!r} of {event_id} is not encrypted; "
                           f"encrypted fields: {sorted(k for k, v in event.payload.items() if isinstance(v, str) and v.startswith('enc:v1:'))}")
    store = SubjectKeyStore(make_redis(settings), RedisKeys(settings.redis_prefix), ring, cache_size=0)
    actor = current_actor()
    target = f"{event.type}/{event_id}/{field}"
    try:
        plain = SubjectCipher(store).decrypt(event.subject or "", event.type, field, value)
    except SubjectForgottenError:
        publish_audit(settings, audit_event(actor=actor, action="reveal", target=target, reason=reason,
                                            outcome="failed", source="bulwark-cli",
                                            details={"subject": event.subject, "why": "subject forgotten"}))
        raise
    publish_audit(settings, audit_event(actor=actor, action="reveal", target=target, reason=reason,
                                        outcome="allowed", source="bulwark-cli", details={"subject": event.subject}))
    result = {"event_id": event_id, "field": field, "subject": event.subject, "value": plain.decode()}
    emit(result, as_json=as_json, rows=[result])


@click.command()
@click.argument("subject")
@click.option("--reason", required=True, help="Why (e.g. the erasure request's reference); audited.")
@click.option("--token", "is_token", is_flag=True, help="SUBJECT is already the pseudonymous token (tok_...).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def forget(subject: str, reason: str, is_token: bool, as_json: bool) -> None:
    """Forget SUBJECT (a customer id, or its token with --token): delete its key, so every encrypted field
    of that subject, anywhere, can no longer be decrypted; record it on the forgotten list, so no later
    training set includes it, and name the model versions trained on it (the updater replaces and purges
    them within its forget deadline; `bulwark models versions MODEL` shows when)."""
    from bulwark.audit import audit_event, current_actor, publish_audit
    from bulwark.cli.main import cli_settings
    from bulwark.crypto import Pseudonymizer, load_ring
    from bulwark.crypto.keys import RING_FIELD, RING_PSEUDONYM
    from bulwark.crypto.subjects import SubjectKeyStore
    from bulwark.forgetting import ForgettingLedger
    from bulwark.redis_client import make_redis
    from bulwark.redis_keys import RedisKeys
    from bulwark.registry import ModelRegistry

    settings = cli_settings()
    token = subject if is_token else Pseudonymizer(load_ring(RING_PSEUDONYM, settings.keys_path)).token(
        subject, domain="subject")
    store = SubjectKeyStore(make_redis(settings), RedisKeys(settings.redis_prefix),
                            load_ring(RING_FIELD, settings.keys_path), cache_size=0)
    client = make_redis(settings)
    ledger = ForgettingLedger(client, RedisKeys(settings.redis_prefix),
                              ModelRegistry(client, RedisKeys(settings.redis_prefix)))
    existed = store.forget(token)
    # The versions trained on this subject: their replacement deadline counts from now (the updater
    # retrains, rolls out the replacement and purges them).
    affected = ledger.affected(token)
    for model, version in affected:
        ledger.stamp(model, version)
    publish_audit(settings, audit_event(actor=current_actor(), action="forget", target=token, reason=reason,
                                        outcome="allowed", source="bulwark-cli",
                                        details={"key_existed": existed,
                                                 "versions": [f"{m} v{v}" for m, v in affected]}))
    result = {"subject": token, "key_deleted": existed, "forgotten": True,
              "models_to_replace": ", ".join(f"{m} v{v}" for m, v in affected) or "-"}
    emit(result, as_json=as_json, rows=[result])


COMMANDS = [reveal, forget]
