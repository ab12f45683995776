"""A local copy of a MUSE dataset repository in the Hugging Face hub's layout (parquet files per subset and split,
declared in the README's ``configs``), made from a MUSE-layout folder, so that ``datasets.load_dataset`` reads it
exactly as it reads muse-bench/MUSE-News from the hub."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from qru.corpus.muse import MuseCorpus


def _tables(corpus: MuseCorpus) -> dict[tuple[str, str], pd.DataFrame]:
    tables = {("knowmem", name): pd.DataFrame(rows, columns=["answer", "question"])
              for name, rows in corpus.knowmem.items()}
    tables[("verbmem", "forget")] = pd.DataFrame(corpus.verbmem_forget, columns=["prompt", "gt"])
    tables.update({("privleak", name): pd.DataFrame({"text": texts}) for name, texts in corpus.privleak.items()})
    tables.update({("raw", name): pd.DataFrame({"text": docs}) for name, docs in corpus.raw.items() if docs})
    return tables


def write_hub_repo(corpus: MuseCorpus, root: Path) -> Path:
    """Write ``corpus`` under ``root`` as a hub dataset repository and return ``root``."""
    configs: dict[str, list[str]] = {}
    for (subset, split), frame in _tables(corpus).items():
        rel = f"{subset}/{split}-00000-of-00001.parquet"
        (root / subset).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / rel, index=False)
        configs.setdefault(subset, []).append(f"  - split: {split}\n    path: {rel}")
    yaml = "".join(f"- config_name: {name}\n  data_files:\n" + "\n".join(parts) + "\n"
                   for name, parts in configs.items())
    (root / "README.md").write_text(f"---\nconfigs:\n{yaml}---\n# MUSE (test copy)\n", encoding="utf-8")
    return root
