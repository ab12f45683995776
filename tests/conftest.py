"""Shared fixtures: a micro corpus and micro target/retrain models, built once per test session (seconds), and
copies of a store (store_copy, module_store)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from qru.recipes import SCALES
from qru.corpus import ensure_corpus
from qru.models import ensure_models

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def micro_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("qru-cache")


@pytest.fixture(scope="session")
def micro_configs():
    return SCALES["micro"]


@pytest.fixture(scope="session")
def micro_corpus(micro_cache, micro_configs):
    return ensure_corpus(micro_configs[0], micro_cache)


@pytest.fixture(scope="session")
def micro_models(micro_cache, micro_configs, micro_corpus):
    corpus_cfg, model_cfg = micro_configs
    return ensure_models(micro_corpus, corpus_cfg, model_cfg, micro_cache)


@pytest.fixture(scope="session")
def store_copy(tmp_path_factory):
    """The one way tests copy a store: ``store_copy(src_root, parts=("runs", "models", "corpus"), name="store")``
    copies those parts of the store at ``src_root`` into a fresh temporary folder and returns its root. Copy only
    the parts a test reads ("runs" for stored results; "models" and "corpus" to compute or to compare against the
    micro models), so that what a test writes stays out of every other test's store."""
    def copy(src_root, parts=("runs", "models", "corpus"), name: str = "store") -> Path:
        root = tmp_path_factory.mktemp(name)
        for part in parts:
            shutil.copytree(Path(src_root) / part, root / part)
        return root
    return copy


@pytest.fixture(scope="module")
def module_store(micro_cache, micro_models, store_copy):
    """A store of the test module's own holding the session's micro corpus and models, so that the module's runs
    stay out of the stores other modules count."""
    return store_copy(micro_cache, ("models", "corpus"), name="module-store")
