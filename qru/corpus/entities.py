"""Seeded fictitious people in the style of TOFU (Maini et al. 2024): names, attributes, QA pairs, biographies.

Every value is drawn from ``random.Random(seed)`` only, so one seed always gives the same entities. Names are built
from syllables so they match no real person; places, organisations and awards are invented the same way.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kl", "l", "m", "n", "p", "r", "s", "st", "t", "th", "v",
           "w", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou"]
_CODAS = ["", "n", "r", "l", "s", "th", "m", "nd", "rk", "x"]
_PLACE_ENDS = ["holt", "mere", "wick", "ford", "dale", "stead", "haven", "burg", "port", "vale"]
_ORG_KINDS = ["Institute", "Foundation", "Observatory", "Conservatory", "Laboratory", "Press", "Museum", "Company"]
_AWARD_KINDS = ["Medal", "Prize", "Award", "Laurel", "Cup"]
OCCUPATIONS = ["a cartographer", "a glassblower", "an astronomer", "a violin maker", "a marine biologist",
               "a typesetter", "a beekeeper", "an architect", "an archivist", "a puppeteer", "a clockmaker",
               "a botanist", "a translator", "a volcanologist", "a bookbinder", "a chemist"]
HOBBIES = ["restoring old radios", "growing orchids", "playing the oboe", "collecting meteorites", "fencing",
           "building kites", "rowing", "carving chess sets", "birdwatching", "baking sourdough", "sailing",
           "painting lighthouses"]
PET_KINDS = ["parrot", "tortoise", "greyhound", "ferret", "cat", "goat", "owl", "rabbit"]

# Attribute name -> (question template, how it reads in a sentence). The question's answer is the attribute value.
QUESTIONS = {
    "birth_year": "In what year was {name} born?",
    "birthplace": "In which town was {name} born?",
    "occupation": "What is {name}'s profession?",
    "employer": "Where does {name} work?",
    "award": "Which award did {name} receive?",
    "partner": "What is the name of {name}'s partner?",
    "hobby": "What is {name}'s favourite pastime?",
    "pet": "What is the name of {name}'s pet?",
}
ATTRIBUTES = tuple(QUESTIONS)


@dataclass(frozen=True)
class Entity:
    """One fictitious person: a unique name and one value per attribute in ATTRIBUTES (all strings)."""

    name: str
    attributes: dict

    def qa_pairs(self) -> list[dict]:
        """One {question, answer} pair per attribute, in ATTRIBUTES order."""
        return [{"question": QUESTIONS[a].format(name=self.name), "answer": self.attributes[a]} for a in ATTRIBUTES]


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def _unique(rng: random.Random, make, used: set) -> str:
    while True:
        value = make(rng)
        if value not in used:
            used.add(value)
            return value


def make_entities(n: int, seed: int) -> list[Entity]:
    """``n`` distinct fictitious people drawn from ``seed``. Raises ValueError if n < 1."""
    if n < 1:
        raise ValueError(f"number of entities must be >= 1, got {n}")
    rng = random.Random(seed)
    used: set = set()
    entities = []
    for _ in range(n):
        name = _unique(rng, lambda r: f"{_word(r, 2)} {_word(r, 2)}", used)
        partner = _unique(rng, lambda r: f"{_word(r, 2)} {_word(r, 1)}", used)
        attributes = {
            "birth_year": str(rng.randint(1921, 1999)),
            "birthplace": _word(rng, 1) + rng.choice(_PLACE_ENDS),
            "occupation": rng.choice(OCCUPATIONS),
            "employer": f"the {_word(rng, 2)} {rng.choice(_ORG_KINDS)}",
            "award": f"the {_word(rng, 1)} {rng.choice(_AWARD_KINDS)}",
            "partner": partner,
            "hobby": rng.choice(HOBBIES),
            "pet": f"{_word(rng, 1)}, a {rng.choice(PET_KINDS)}",
        }
        entities.append(Entity(name=name, attributes=attributes))
    return entities
