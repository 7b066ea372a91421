"""`python -m services.ingest_anonymizer` (or `bulwark-ingest-anonymizer`): run the anonymizer."""

from __future__ import annotations

from bulwark.crypto import Pseudonymizer, load_ring
from bulwark.crypto.keys import RING_FIELD, RING_PSEUDONYM
from bulwark.crypto.subjects import SubjectCipher, SubjectKeyStore
from bulwark.runtime import ServiceRuntime, main_guard
from bulwark.settings import CommonSettings, load_settings
from services.ingest_anonymizer.handler import SERVICE, AnonymizerHandler
from services.ingest_anonymizer.policy import load_policy
from services.ingest_anonymizer.settings import AnonymizerSettings


@main_guard
def main() -> None:
    """Load settings, keys and the policy (each validated), then consume events.raw until SIGTERM."""
    settings = load_settings(CommonSettings)
    own = load_settings(AnonymizerSettings)
    rt = ServiceRuntime(SERVICE, settings)
    policy = load_policy(own.policy_path, rt.registry)
    keys_dir = settings.keys_path
    store = SubjectKeyStore(rt.redis, rt.keys, load_ring(RING_FIELD, keys_dir),
                            cache_size=own.subject_key_cache_size, cache_ttl_s=own.subject_key_cache_ttl_s)
    handler = AnonymizerHandler(settings, policy, rt.registry, Pseudonymizer(load_ring(RING_PSEUDONYM, keys_dir)),
                                SubjectCipher(store))
    rt.ensure_topics()
    rt.run(loop=rt.consumer_loop(handler))


if __name__ == "__main__":
    main()
