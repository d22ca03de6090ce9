"""A pair's answer, typed once: what Predictor.predict returns, what `digitcmp predict` prints
(as text or `--json`) and what the API answers (schemas.py derives its response schema from these
fields and their descriptions, adding what only the API sends: the views the model saw and the
regions that were read)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields


def _described(text: str, **kwargs):
    return field(metadata={"description": text}, **kwargs)


@dataclass(frozen=True, kw_only=True)
class Prediction(Mapping):
    """One pair's answer: is the first digit <= the second? Read by attribute; also readable as
    the dict predict() returned before it was typed (p["p_le"], "digits" in p), so that code
    written against those dicts goes on working."""

    input: str = _described("What was compared ('a.png <= b.png', 'pair 3', ...).")
    le: bool = _described("The answer: the first digit <= the second (p_le > 0.5).")
    p_le: float = _described("The model's probability that the first digit <= the second.")
    digits: list[int] | None = _described(
        "The digit each side reads as (None for a model without digit heads).", default=None
    )
    digit_probs: list[list[float]] | None = _described(
        "Each side's ten digit probabilities, to 6 decimals (None without digit heads).", default=None
    )
    unsure: bool = _described("Whether a side is not one clear digit: then the answer is a lean, and doubt says why.")
    doubt: str | None = _described("Why, side by side ('second digit: reads as 4 or 9'), or None.", default=None)

    def to_dict(self) -> dict:
        """As JSON has it (`digitcmp predict --json`): a model without digit heads has no digits keys."""
        out = asdict(self)  # lists copied, so the caller may change them
        return {key: out[key] for key in self._keys()}

    def _keys(self) -> list[str]:
        """The keys of to_dict(), in its order (no digits keys without digit heads)."""
        return [f.name for f in fields(self) if self.digits is not None or f.name not in ("digits", "digit_probs")]

    def __getitem__(self, key: str):
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def plain(self) -> str:
        """As the plain line says it: the doubt first when there is one, then the answer it leans
        to ("a <= b: unsure (a: not a digit); leaning yes, p = 0.99"), else the answer."""
        answer = "yes" if self.le else "no"
        digits = f"; digits {self.digits[0]}, {self.digits[1]}" if self.digits is not None else ""
        if self.unsure:
            why = self.doubt or "an input may not be one clear digit"
            return f"{self.input}: unsure ({why}); leaning {answer}, p = {self.p_le:.2f}{digits}"
        return f"{self.input}: {answer} (p = {self.p_le:.2f}){digits}"
