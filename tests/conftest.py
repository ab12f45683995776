"""Shared fixtures: a micro corpus and micro target/retrain models, built once per test session (seconds)."""
from __future__ import annotations

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


@pytest.fixture(scope="module")
def module_store(micro_cache, micro_models, tmp_path_factory):
    """A store of the test module's own holding the session's micro corpus and models, so that the module's runs
    stay out of the stores other modules count."""
    import shutil
    root = tmp_path_factory.mktemp("module-store")
    for part in ("models", "corpus"):
        shutil.copytree(micro_cache / part, root / part)
    return root
