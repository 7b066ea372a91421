"""Every Redis key Bulwark writes, built in one place, each with its owner and TTL policy.

All keys start with the configured prefix (`BULWARK_REDIS_PREFIX`, default `bulwark`) so several
platforms can share one Redis. Values that are not ids are never personal data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    """Key builders. Owner = the only writer; TTL = how long a key lives."""

    prefix: str = "bulwark"

    def idempotence(self, service: str, event_id: str) -> str:
        """Owner: that service's consumer loop. TTL: `BULWARK_IDEMPOTENCE_TTL_S` (default 7 days).

        The service name is a hash tag, so one batch's keys share a Redis Cluster slot (MGET works there)."""
        return f"{self.prefix}:idem:{{{service}}}:{event_id}"

    def heartbeat(self, service: str, instance: str) -> str:
        """Owner: that instance. TTL: `BULWARK_HEARTBEAT_TTL_S`; gone means down."""
        return f"{self.prefix}:hb:{service}:{instance}"

    def heartbeat_pattern(self) -> str:
        """SCAN pattern matching every heartbeat."""
        return f"{self.prefix}:hb:*"

    def heartbeat_history(self, service: str) -> str:
        """Owner: that service's instances. TTL: 1 day; recent latency samples for per-part baselines."""
        return f"{self.prefix}:hbhist:{service}"

    def heartbeat_instances(self, service: str) -> str:
        """Owner: that service's instances. TTL: 1 day; sorted set instance -> last beat (unix s), an instance
        removed when it stops gracefully, so the doctor can name one whose heartbeat expired (crashed, frozen)."""
        return f"{self.prefix}:hbinst:{service}"

    def model_versions(self, model: str) -> str:
        """Sorted set of a model's versions by creation time. Owner: trainer. TTL: none (the registry)."""
        return f"{self.prefix}:registry:{model}:versions"

    def model_version(self, model: str, version: str) -> str:
        """Hash of one version's state, lineage, reports and digests. Owner: each lifecycle stage
        writes its own fields. TTL: none; deleted when the version is retired and purged."""
        return f"{self.prefix}:registry:{model}:v:{version}"

    def model_seq(self, model: str) -> str:
        """Counter allocating a model's version numbers. Owner: trainer. TTL: none."""
        return f"{self.prefix}:registry:{model}:seq"

    def models(self) -> str:
        """Set of model names. Owner: trainer. TTL: none."""
        return f"{self.prefix}:registry:models"

    def model_subjects(self, model: str, version: str) -> str:
        """Set of the subject tokens whose events trained a version (for forgetting). Owner: trainer.
        TTL: none; deleted with the version."""
        return f"{self.prefix}:registry:{model}:v:{version}:subjects"

    def live(self, model: str) -> str:
        """The live version and the rollout in progress. Owner: updater. TTL: none."""
        return f"{self.prefix}:live:{model}"

    def prediction_cache(self, model: str, version: str, input_hash: str) -> str:
        """Owner: inference front door. TTL: `BULWARK_INFERENCE_CACHE_TTL_S`; per version, so a new
        live version never serves an old answer."""
        return f"{self.prefix}:cache:pred:{model}:{version}:{input_hash}"

    def explanation_cache(self, model: str, version: str, method: str, input_hash: str) -> str:
        """Owner: explainer. TTL: `BULWARK_EXPLAINER_CACHE_TTL_S`."""
        return f"{self.prefix}:cache:expl:{model}:{version}:{method}:{input_hash}"

    def explanation_request(self, model: str, request_id: str) -> str:
        """A logged prediction's input (pseudonymous features or scrubbed text), version and label, from
        inference.log, for `Explain(request_id=...)`. Owner: explainer. TTL: `BULWARK_EXPLAINER_REQUEST_TTL_S`."""
        return f"{self.prefix}:expl:req:{model}:{request_id}"

    def explanation_summary(self, model: str, version: str) -> str:
        """Hash of a version's global importance: `n` explained records, `abs:<feature>` and `sum:<feature>`
        (sums of |attribution| and of attribution; divide by `n` for means). Owner: explainer. TTL:
        `BULWARK_EXPLAINER_SUMMARY_TTL_S`, renewed on every update."""
        return f"{self.prefix}:expl:summary:{model}:{version}"

    def explanation_counted(self, event_id: str) -> str:
        """Marks an inference.log record as counted in its version's summary (value: the count it made), so a
        redelivery never counts twice. Owner: explainer. TTL: `BULWARK_IDEMPOTENCE_TTL_S`."""
        return f"{self.prefix}:expl:counted:{event_id}"

    def rate(self, client: str, window: str) -> str:
        """Per-client request counts. Owner: the guard. TTL: the window length."""
        return f"{self.prefix}:rate:{client}:{window}"

    def extraction(self, client: str, kind: str, window: str) -> str:
        """The extraction defence's per-client state: `q` (hash of query, out-of-distribution and near-boundary
        counts per sub-window), `c` (HyperLogLog of input-grid cells per sub-window), `m` (queries per minute),
        `t` (the throttle mark). Owner: inference front door. TTL: the window plus one sub-window; `m` 2 min;
        `t` the policy's throttle_s. The client is a hash tag, so a PFCOUNT over sub-windows works on a cluster."""
        return f"{self.prefix}:extract:{{{client}}}:{kind}:{window}"

    def subject_key(self, subject_token: str) -> str:
        """A subject's wrapped field-encryption key. Owner: anonymizer. TTL: none; deleted by forget."""
        return f"{self.prefix}:subjkey:{subject_token}"

    def forgotten(self) -> str:
        """Set of forgotten subjects' pseudonymous ids. Owner: anonymizer (forget). TTL: none."""
        return f"{self.prefix}:forgotten"

    def counter(self, service: str, name: str) -> str:
        """A service's running counter (events handled, trigger counts). Owner: that service. TTL: none."""
        return f"{self.prefix}:count:{service}:{name}"

    def state(self, service: str, name: str) -> str:
        """A service's small durable state (offsets it tracks, schedules). Owner: that service. TTL: none."""
        return f"{self.prefix}:state:{service}:{name}"
