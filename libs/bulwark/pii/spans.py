"""The one value type the detector produces: where a finding is and what it is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A finding: `text[start:end]` holds a value of type `entity`, with confidence `score` in [0, 1].

    The span carries offsets only, never the value itself, so spans can be logged or counted safely.
    """

    entity: str
    start: int
    end: int
    score: float

    @property
    def length(self) -> int:
        """Length of the span in characters."""
        return self.end - self.start
