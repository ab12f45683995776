"""Entity-token VerbMem: VerbMem scored on the entity-specific words of each continuation only.

On the embedded corpus a VerbMem continuation is a biography written from shared sentence templates ("... was born
in 1953. ... works at the ..."), so ROUGE-L over the whole text stays high for any model that learned the templates
(docs/design.md "Calibration": the retrain model scores ~34). This variant keeps only the attribute values (birth year,
town, employer, award, partner, pastime, pet; not the name, which the prompt gives):

- reference: the spans of the ground truth that are values of the item's own entity, in text order;
- prediction: the spans of the generated text that are values of *any* entity of the corpus (so naming another
  person's town costs precision), left to right without overlaps, the longest value winning at one position;
- score: ROUGE-L F1 (rouge-score, as MUSE) of the two span sequences with each distinct value as one symbol (a
  wrong value earns nothing for the words it shares with the right one, such as "the" or "Laurel"); 0 for an empty
  prediction. Items whose ground truth holds no value of their entity are left out. Metric = mean score x 100.

It needs the corpus's ``entities.json`` (the embedded corpus writes it; MUSE data has none, so there it is missing).
"""
from __future__ import annotations

import re
from functools import lru_cache

from qru.evals.rouge import rouge_l

NOT_VALUES = ("split", "name")


def entity_values(entity: dict) -> list[str]:
    """The attribute values of one ``entities.json`` record (every string field except split and name)."""
    return [str(v) for k, v in entity.items() if k not in NOT_VALUES and isinstance(v, str) and v.strip()]


@lru_cache(maxsize=64)
def _pattern(values: tuple[str, ...]) -> re.Pattern:
    alternatives = "|".join(re.escape(v) for v in sorted(set(values), key=len, reverse=True))
    return re.compile(r"(?<!\w)(?:" + alternatives + r")(?!\w)")


def value_spans(text: str, values: list[str]) -> list[str]:
    """The occurrences of ``values`` in ``text`` (whole-word, case-sensitive), left to right without overlaps; at
    one position the longest value wins."""
    values = tuple(v for v in values if v)
    if not values:
        return []
    return [m.group(0) for m in _pattern(values).finditer(text)]


def owner(item: dict, entities: list[dict]) -> dict | None:
    """The entity named in the item's prompt (else in its ground truth), the longest name if several, or None."""
    for text in (item["prompt"], item["gt"]):
        named = [e for e in entities if e.get("name") and re.search(r"(?<!\w)" + re.escape(e["name"]) + r"(?!\w)",
                                                                     text)]
        if named:
            return max(named, key=lambda e: len(e["name"]))
    return None


def entity_score(gt: str, output: str, own: list[str], every: list[str]) -> float | None:
    """ROUGE-L F1 in [0, 1] of the entity spans of ``output`` (values ``every``) against those of ``gt`` (values
    ``own``), each value one symbol; None if ``gt`` holds none."""
    reference = value_spans(gt, own)
    if not reference:
        return None
    prediction = value_spans(output, every)
    if not prediction:
        return 0.0
    # each distinct value is one symbol, so a wrong value scores nothing even where it shares words ("the ... Laurel")
    symbol = {v: f"v{i}" for i, v in enumerate(dict.fromkeys(reference + prediction))}
    return rouge_l(" ".join(symbol[v] for v in reference), " ".join(symbol[v] for v in prediction))["f1"]


def entity_verbmem(records: list[dict], items: list[dict], entities: list[dict]) -> tuple[float | None, list]:
    """Entity-token VerbMem (0-100) of VerbMem ``records`` ({gt (cut as scored), output}) for ``items`` ({prompt,
    gt}, same order), and the per-item scores (None where an item has no entity value or no known entity).
    Returns (None, [None, ...]) if no item can be scored. Raises ValueError if records and items differ in length."""
    if len(records) != len(items):
        raise ValueError(f"{len(records)} VerbMem records for {len(items)} items")
    every = [v for e in entities for v in entity_values(e)]
    scores = []
    for record, item in zip(records, items):
        entity = owner(item, entities)
        scores.append(None if entity is None else
                      entity_score(record["gt"], record["output"], entity_values(entity), every))
    valid = [s for s in scores if s is not None]
    return (100.0 * sum(valid) / len(valid) if valid else None), scores


__all__ = ["entity_score", "entity_values", "entity_verbmem", "owner", "value_spans"]
