"""Creating Bulwark's topics explicitly (auto-creation is off everywhere)."""

from __future__ import annotations

import logging
from typing import Iterable

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from bulwark.bus.client import kafka_client_config
from bulwark.errors import UnavailableError
from bulwark.settings import CommonSettings

log = logging.getLogger(__name__)


def ensure_topics(settings: CommonSettings, names: Iterable[str] | None = None, *,
                  partitions: int | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    wanted = list(names) if names is not None else settings.topics.all()
    try:
        admin = KafkaAdminClient(**kafka_client_config(settings, client_id="bulwark-admin"))
    except KafkaError as exc:
        raise UnavailableError(f"Kafka at {settings.kafka_bootstrap_servers} is unreachable ({type(exc).__name__}); "
                               "check KAFKA_BOOTSTRAP_SERVERS") from None
    try:
        existing = set(admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            new = [NewTopic(n, partitions or settings.kafka_partitions, settings.kafka_replication_factor)
                   for n in missing]
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process created it first
            log.info("created topics topics=%s", ",".join(missing))
        return missing
    finally:
        admin.close()
