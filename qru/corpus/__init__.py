"""Corpora: the embedded fictitious-entity generator and the MUSE-layout loader."""
from qru.corpus.embedded import build_files, corpus_dir, ensure_corpus, write_corpus
from qru.corpus.muse import CorpusError, MuseCorpus, check_trainable, load_muse_dir, split_documents

__all__ = ["CorpusError", "MuseCorpus", "build_files", "check_trainable", "corpus_dir", "ensure_corpus",
           "load_muse_dir", "split_documents", "write_corpus"]
