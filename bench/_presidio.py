"""Presidio as the anchor library for the PII bench: offline, regex recognizers only, no NLP model.

Presidio's `EmailRecognizer.validate_result` calls the module-level `tldextract.extract`, whose shared
`TLDExtract()` downloads the public suffix list on first use. Presidio builds no extractor of its own,
so rather than patching the global one, `OfflineEmailRecognizer` overrides `validate_result` with an
extractor that reads only the suffix-list snapshot bundled with tldextract.
"""

from __future__ import annotations

import tldextract
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NlpEngineProvider
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
)
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig

from bulwark.pii import Span

# Presidio's entity names mapped to ours; Presidio has no Chinese resident ID recognizer.
ENTITY_MAP = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP_ADDRESS",
}
# Regions whose national formats the phone recognizer also tries ('+'-prefixed numbers parse anywhere);
# CN lets it see bare Chinese mobiles, which our corpus plants.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "NL", "CN")

# No download URLs and no cache directory: tldextract falls back to its bundled snapshot.
_OFFLINE_TLD = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's email recognizer with a TLD check that never touches the network."""

    def validate_result(self, pattern_text: str) -> bool:
        """True when the matched address has a domain with a known public suffix."""
        return _OFFLINE_TLD(pattern_text).fqdn != ""


def build_presidio() -> tuple[AnalyzerEngine, AnonymizerEngine]:
    """An offline AnalyzerEngine (no-op NLP engine, the five regex recognizers we compare) and an
    AnonymizerEngine."""
    nlp_engine = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "no_op", "models": [{"lang_code": "en", "model_name": "none"}]}).create_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (OfflineEmailRecognizer(), PhoneRecognizer(supported_regions=PHONE_REGIONS),
                       CreditCardRecognizer(), IbanRecognizer(), IpRecognizer()):
        registry.add_recognizer(recognizer)
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])
    return analyzer, AnonymizerEngine()


def _analyze(analyzer: AnalyzerEngine, text: str) -> list[RecognizerResult]:
    return analyzer.analyze(text=text, language="en", entities=list(ENTITY_MAP))


def presidio_scan(analyzer: AnalyzerEngine, text: str) -> list[Span]:
    """Presidio's findings as our spans, sorted by start; overlaps resolved as `TextScanner` does."""
    found = [Span(ENTITY_MAP[r.entity_type], r.start, r.end, float(r.score))
             for r in _analyze(analyzer, text) if r.entity_type in ENTITY_MAP]
    kept: list[Span] = []
    for span in sorted(found, key=lambda s: (s.start - s.end, -s.score, s.start)):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


def presidio_anonymize(analyzer: AnalyzerEngine, anonymizer: AnonymizerEngine, text: str) -> str:
    """`text` with each finding replaced by `<ENTITY>` in our entity names, like the default placeholder."""
    results = _analyze(analyzer, text)
    operators = {p: OperatorConfig("replace", {"new_value": f"<{ours}>"}) for p, ours in ENTITY_MAP.items()}
    return anonymizer.anonymize(text=text, analyzer_results=results, operators=operators).text


class PresidioScanner:
    """`scan(text)` over Presidio, so `evaluate()` can score it on the same corpus."""

    def __init__(self, analyzer: AnalyzerEngine) -> None:
        self.analyzer = analyzer

    def scan(self, text: str) -> list[Span]:
        """Presidio's findings as spans (see `presidio_scan`)."""
        return presidio_scan(self.analyzer, text)
