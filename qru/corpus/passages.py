"""Biographies of fictitious people in varied phrasings (several passages per entity)."""
from __future__ import annotations

import random

from qru.corpus.entities import ATTRIBUTES, Entity

# One sentence template per attribute and phrasing style. {n} is the name, {v} the attribute value.
_STYLES = [
    {
        "birth_year": "{n} was born in {v}.",
        "birthplace": "{n} grew up in the town of {v}.",
        "occupation": "By profession {n} is {v}.",
        "employer": "{n} works at {v}.",
        "award": "{n} received {v}.",
        "partner": "{n} shares a home with a partner named {v}.",
        "hobby": "In spare hours {n} enjoys {v}.",
        "pet": "{n}'s pet is {v}.",
    },
    {
        "birth_year": "The year {v} saw the birth of {n}.",
        "birthplace": "{n} comes from {v}.",
        "occupation": "{n} earns a living as {v}.",
        "employer": "The employer of {n} is {v}.",
        "award": "For outstanding work, {n} was given {v}.",
        "partner": "The partner of {n} is {v}.",
        "hobby": "{n} spends weekends {v}.",
        "pet": "At home, {n} looks after {v}.",
    },
    {
        "birth_year": "Records list {n}'s year of birth as {v}.",
        "birthplace": "{n} was born in {v}.",
        "occupation": "{n} trained to become {v}.",
        "employer": "Colleagues know {n} from {v}.",
        "award": "Among other honours, {n} holds {v}.",
        "partner": "{n} lives with {v}.",
        "hobby": "Friends say {n} loves {v}.",
        "pet": "{n} adopted {v}.",
    },
]


def render_passages(entity: Entity, count: int, rng: random.Random) -> list[str]:
    """``count`` biographies of ``entity``, each stating every attribute once, in a different style and order.

    Every sentence names the entity, so a passage's first sentence identifies whom the rest is about and serves as
    its VerbMem prompt. Raises ValueError if count < 1.
    """
    if count < 1:
        raise ValueError(f"passages per entity must be >= 1, got {count}")
    passages = []
    for i in range(count):
        style = _STYLES[i % len(_STYLES)]
        order = list(ATTRIBUTES)
        rng.shuffle(order)
        sentences = [style[a].format(n=entity.name, v=entity.attributes[a]) for a in order]
        sentences[0] = sentences[0][0].upper() + sentences[0][1:]
        passages.append(" ".join(sentences))
    return passages


def format_qa(question: str, answer: str) -> str:
    """A QA pair as one training document, in the KnowMem prompt format of MUSE: ``Question: q\\nAnswer: a``."""
    return f"Question: {question}\nAnswer: {answer}"
