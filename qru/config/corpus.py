"""Where a run's texts come from: the embedded generator, MUSE from the hub, or a MUSE-layout folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qru.checks import ConfigError, integers as _integers, require as _require, seed_check as _seed

MAX_TRAIN_TOKENS = 10**12  # --max-train-tokens: far beyond any corpus, refused above
MUSE_HUB = {"muse-news": "muse-bench/MUSE-News", "muse-books": "muse-bench/MUSE-Books"}


@dataclass(frozen=True)
class CorpusConfig:
    """Where the forget / retain / holdout texts come from.

    Args:
        source: ``"embedded"`` for the seeded fictitious-entity corpus qru generates itself, ``"muse-news"`` or
            ``"muse-books"`` for MUSE from the Hugging Face hub (muse-bench/MUSE-News, -Books; fetched once into the
            cache with ``datasets``), or the path of a folder in MUSE's layout (``knowmem/``, ``verbmem/``,
            ``privleak/``, ``raw/``; docs/design.md).
        seed: seed of the embedded generator (ignored for a folder).
        n_forget: entities in the forget set D_f (embedded only).
        n_retain: entities in the retain set D_r (embedded only).
        n_holdout: entities never trained on; they feed the membership-inference metric (embedded only).
        passages_per_entity: differently phrased biographies written per entity (embedded only).
        max_train_tokens: train the target / retrain models and unlearn on at most this many tokens of each raw
            training split (forget, retain1, retain2): whole documents from the start of the file, the last one cut
            at a token boundary (qru.evals.fit.cap_training); 0 = all of it. For a full MUSE folder on a laptop.
    """

    source: str = "embedded"
    seed: int = 0
    n_forget: int = 10
    n_retain: int = 50
    n_holdout: int = 10
    passages_per_entity: int = 2
    max_train_tokens: int = 0

    def __post_init__(self) -> None:
        _require(isinstance(self.source, str) and self.source != "", f"corpus source must be a non-empty string, "
                 f"got {self.source!r}")
        _integers(self, ("n_forget", "n_retain", "n_holdout", "passages_per_entity"))
        _integers(self, ("max_train_tokens",), minimum=0)
        _require(self.max_train_tokens <= MAX_TRAIN_TOKENS,
                 f"max_train_tokens must be at most {MAX_TRAIN_TOKENS:,} (0 = all), got {self.max_train_tokens!r}")
        _seed("corpus seed", self.seed)
        _require(self.n_retain >= 2, f"n_retain must be >= 2 (retain QA and ICL pairs), got {self.n_retain!r}")

    @property
    def is_embedded(self) -> bool:
        return self.source == "embedded"

    @property
    def is_hub(self) -> bool:
        """True for ``muse-news`` / ``muse-books`` (MUSE from the Hugging Face hub)."""
        return self.source in MUSE_HUB

    @property
    def is_folder(self) -> bool:
        """True for a MUSE-layout folder given by path."""
        return not (self.is_embedded or self.is_hub)


def resolve_source(source: str) -> str:
    """``"embedded"``, ``"muse-news"`` and ``"muse-books"`` as they are, otherwise the absolute path of a corpus
    folder. Raises ConfigError if it is missing."""
    if source == "embedded" or source in MUSE_HUB:
        return source
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"corpus path is not valid UTF-8: {source!r}") from None
    path = Path(source).expanduser()
    if not path.is_dir():
        raise ConfigError(f"corpus folder not found: {source}")
    return str(path.resolve())

