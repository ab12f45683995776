"""The papers' reference numbers (Llama-2-7B on MUSE), for display beside qru's own results, never as targets.

Source: docs/design.md "Reference numbers", from Zhang et al. (ICLR 2025, arXiv 2410.16454), Table 2 (MUSE-News,
bitsandbytes FP4 4-bit) and arXiv 2602.13151 (LoRA unlearning, merged before quantization). Columns follow qru's
metric names; None = not reported there.
"""
from __future__ import annotations

import pandas as pd

SETTING = "Llama-2-7B on MUSE (published numbers, not computed by qru)"
COLUMNS = ["paper", "corpus", "model", "precision", "verbmem", "knowmem_forget", "privleak", "knowmem_retain"]
_ROWS = [
    ("Zhang et al. 2025", "NEWS", "target", "32-bit", 58.4, 63.9, -99.8, 55.2),
    ("Zhang et al. 2025", "NEWS", "target", "4-bit", 34.2, 54.4, -99.8, 48.2),
    ("Zhang et al. 2025", "NEWS", "retrain", "32-bit", 20.8, 33.1, 0.0, 55.0),
    ("Zhang et al. 2025", "NEWS", "NPO+KLR full", "32-bit", 16.6, 36.6, -94.0, 33.3),
    ("Zhang et al. 2025", "NEWS", "NPO+KLR full", "4-bit", 34.1, 53.7, -99.8, 48.8),
    ("Zhang et al. 2025", "NEWS", "GA+GDR full", "32-bit", 0.0, 28.9, 87.1, 34.2),
    ("Zhang et al. 2025", "NEWS", "GA+GDR full", "4-bit", 25.0, 50.1, -99.1, 47.7),
    ("arXiv 2602.13151", "BOOKS", "NPO+GDR full", "4-bit", None, None, None, 50.17),
    ("arXiv 2602.13151", "BOOKS", "NPO+GDR LoRA", "4-bit", None, None, None, 58.10),
    ("arXiv 2602.13151", "NEWS", "GA+GDR full", "4-bit", None, None, None, 40.06),
    ("arXiv 2602.13151", "NEWS", "GA+GDR LoRA", "4-bit", None, None, None, 44.82),
    ("arXiv 2602.13151", "BOOKS", "GA+KLR full", "4-bit", None, None, -25.68, None),
    ("arXiv 2602.13151", "BOOKS", "GA+KLR LoRA", "4-bit", "~0", "~0", -5.86, None),
]


def paper_table() -> pd.DataFrame:
    """The reference rows as a table of text (columns COLUMNS; ``~0`` where the paper reports 'near 0', ``—`` where
    it reports nothing)."""
    table = pd.DataFrame(_ROWS, columns=COLUMNS).astype({c: object for c in COLUMNS[4:]})
    return table.map(lambda v: "—" if v is None else str(v))
