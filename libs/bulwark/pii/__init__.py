"""Personal-data detection in free text: recognizers, a scanner that resolves overlaps, and redaction.

    scanner = TextScanner(BUILTIN_RECOGNIZERS + (PatternRecognizer.from_config(policy_entry),))
    redacted, spans = scanner.redact(note)            # "<EMAIL>" placeholders by default
"""

from .corpus import EntityScore, LabeledText, Report, evaluate, generate_corpus
from .recognizers import BUILTIN_RECOGNIZERS, PatternRecognizer
from .scanner import Replacer, TextScanner, placeholder
from .spans import Span
from .validators import VALIDATORS, Validator, get_validator

__all__ = [
    "BUILTIN_RECOGNIZERS",
    "EntityScore",
    "LabeledText",
    "PatternRecognizer",
    "Replacer",
    "Report",
    "Span",
    "TextScanner",
    "VALIDATORS",
    "Validator",
    "evaluate",
    "generate_corpus",
    "get_validator",
    "placeholder",
]
