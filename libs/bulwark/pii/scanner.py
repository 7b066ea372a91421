"""The scanner: runs the recognizers a text can possibly match, resolves overlaps, and redacts."""

from __future__ import annotations

from typing import Callable, Iterable

from .recognizers import BUILTIN_RECOGNIZERS, PatternRecognizer, text_shape
from .spans import Span

Replacer = Callable[[Span, str], str]

_DIGIT = ord("0")


def placeholder(span: Span, value: str) -> str:
    """The default replacement: the entity type in angle brackets, e.g. `<EMAIL>`; the value is dropped."""
    return f"<{span.entity}>"


class TextScanner:
    """Finds personal values in free text with a fixed set of recognizers.

    Before a recognizer runs, its pre-filter is checked against cheap facts about the text (its number of
    ASCII digits, trigger substrings, and substrings of its shape, see `text_shape`), so a note without
    digits or '@' costs a few string operations rather than a regex search per recognizer. Spans scoring
    below `min_score` are dropped before overlaps are resolved.
    """

    def __init__(self, recognizers: Iterable[PatternRecognizer] = BUILTIN_RECOGNIZERS,
                 min_score: float = 0.0) -> None:
        self.recognizers = tuple(recognizers)
        self.min_score = min_score
        # Flattened once: attribute look-ups on frozen dataclasses are the bulk of the per-call overhead.
        # A trigger needed once is a plain `in` test; only counts above one pay for str.count.
        self._gates = tuple(
            (r.min_digits, tuple(s for s, n in r.triggers if n <= 1),
             tuple((s, n) for s, n in r.triggers if n > 1) if r.triggers else None, r.shapes or None,
             r.analyze)
            for r in self.recognizers)
        self._needs_shape = any(r.min_digits or r.shapes for r in self.recognizers)

    def scan(self, text: str) -> list[Span]:
        """Spans of personal values in `text`: sorted by start, non-overlapping.

        On overlap the longer span wins, then the higher score, then the earlier start.
        """
        if not text:
            return []
        shape, digits = b"", 0
        if self._needs_shape:
            shape = text_shape(text)
            digits = shape.count(_DIGIT)
        found: list[Span] = []
        for min_digits, present, counted, shapes, analyze in self._gates:
            if digits < min_digits:
                continue
            if counted is not None and not _triggered(text, present, counted):
                continue
            if shapes is not None and not _shaped(shape, shapes):
                continue
            found.extend(analyze(text))
        return _resolve(found, self.min_score)

    def redact(self, text: str, replace: Replacer = placeholder) -> tuple[str, list[Span]]:
        """`text` with each span's substring replaced by `replace(span, substring)`, and the spans.

        Spans keep the offsets of the original text.
        """
        spans = self.scan(text)
        if not spans:
            return text, spans
        parts: list[str] = []
        pos = 0
        for span in spans:
            parts.append(text[pos:span.start])
            parts.append(replace(span, text[span.start:span.end]))
            pos = span.end
        parts.append(text[pos:])
        return "".join(parts), spans


def _triggered(text: str, present: tuple[str, ...], counted: tuple[tuple[str, int], ...]) -> bool:
    for s in present:
        if s in text:
            return True
    for s, n in counted:
        if text.count(s) >= n:
            return True
    return False


def _shaped(shape: bytes, shapes: tuple[bytes, ...]) -> bool:
    for s in shapes:
        if s in shape:
            return True
    return False


def _resolve(spans: list[Span], min_score: float) -> list[Span]:
    """Greedy overlap resolution: take spans longest first (then highest score), skip any that overlap."""
    if min_score > 0.0:
        spans = [s for s in spans if s.score >= min_score]
    if len(spans) <= 1:
        return spans
    spans.sort(key=_priority)
    kept: list[Span] = []
    for span in spans:
        for k in kept:
            if span.start < k.end and k.start < span.end:
                break
        else:
            kept.append(span)
    kept.sort(key=_start)
    return kept


def _priority(span: Span) -> tuple[int, float, int]:
    return span.start - span.end, -span.score, span.start


def _start(span: Span) -> int:
    return span.start
