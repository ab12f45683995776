"""Probe generations for reading: every model's continuation of a forget-set prompt with the spans that reproduce
the ground truth marked, and an order by how much leaked after quantization.

All model text is HTML-escaped before the only markup qru adds (``<mark>`` around leaked spans, a table around the
continuations), so a generation containing HTML or Markdown is shown as text, never rendered.
"""
from __future__ import annotations

import html

# Orders of the Probes page: by the leaked share of the ground truth, ROUGE-L breaking ties.
SORTS = {
    "came back most after quantization": ("leak_gain", "gain"),
    "leaked most at the lowest bit width": ("leak", "low"),
    "corpus order": (),
}
STYLE = ("<style>.qru-probes td{vertical-align:top;padding:4px 8px;border-bottom:1px solid #ddd}"
         ".qru-probes .text{white-space:pre-wrap;font-family:inherit} .qru-probes .n{white-space:nowrap}"
         ".qru-probes mark{background:#ffd27a;color:inherit;padding:0}</style>")


def mark_spans(text: str, spans: list[list[int]]) -> str:
    """``text`` HTML-escaped, with the character ``spans`` [start, end) wrapped in ``<mark>``. Overlapping or
    out-of-range spans are clipped; the result contains no markup but the marks."""
    out, pos = [], 0
    for start, end in sorted((max(0, int(a)), min(len(text), int(b))) for a, b in spans):
        start = max(start, pos)
        if end <= start:
            continue
        out += [html.escape(text[pos:start]), "<mark>", html.escape(text[start:end]), "</mark>"]
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out)


def output_keys(probes: list[dict]) -> list[str]:
    """The "<model>@<bits>" keys of the probes, ordered target, unlearned, retrain and highest bit width first."""
    keys = list(probes[0]["outputs"]) if probes else []
    order = {"target": 0, "unlearned": 1, "retrain": 2}
    return sorted(keys, key=lambda k: (order.get(k.split("@")[0], 3), -int(k.split("@")[1])))


def leaked_share(probe: dict, key: str) -> float:
    """Share of the ground truth's characters that the continuation ``key`` reproduces in marked spans (0..1)."""
    out = probe["outputs"][key]
    return min(1.0, sum(b - a for a, b in out.get("leaked_spans", [])) / max(len(probe["gt"]), 1))


def leak_scores(probe: dict) -> dict:
    """For the unlearned model at its lowest bit width: ROUGE-L (``low``) and its gain over 32 bits (``gain``), the
    leaked share of the ground truth (``leak``, :func:`leaked_share`) and its gain (``leak_gain``); gains are 0 where
    the run has no 32-bit or quantized output."""
    keys = {int(k.split("@")[1]): k for k in probe["outputs"] if k.startswith("unlearned@")}
    if not keys:
        return {"low": 0.0, "gain": 0.0, "leak": 0.0, "leak_gain": 0.0}
    low, full = keys[min(keys)], keys.get(32, keys[min(keys)])
    rouge = {k: probe["outputs"][k]["rougeL_f1"] for k in (low, full)}
    leak = {k: leaked_share(probe, k) for k in (low, full)}
    return {"low": rouge[low], "gain": rouge[low] - rouge[full], "leak": leak[low], "leak_gain": leak[low] - leak[full]}


def ordered(probes: list[dict], sort: str, min_gain: float = float("-inf")) -> list[tuple[int, dict]]:
    """``(index, probe)`` pairs sorted by SORTS[sort] (descending), keeping probes whose ROUGE-L gain after
    quantization is at least ``min_gain``. Raises KeyError for an unknown sort."""
    keys = SORTS[sort]
    pairs = [(i, p) for i, p in enumerate(probes) if leak_scores(p)["gain"] >= min_gain]
    return sorted(pairs, key=lambda ip: tuple(-leak_scores(ip[1])[k] for k in keys))


def probe_html(probe: dict, keys: list[str]) -> str:
    """An HTML table: one row per model key with its ROUGE-L against the ground truth and the marked continuation;
    the ground truth first. Every piece of text is escaped."""
    rows = [f"<tr><td class='n'><b>ground truth</b></td><td></td><td class='text'>{html.escape(probe['gt'])}</td></tr>"]
    for key in keys:
        out = probe["outputs"].get(key)
        if out is None:
            continue
        rows.append(f"<tr><td class='n'><b>{html.escape(key.replace('@', ' @ '))} bit</b></td>"
                    f"<td class='n'>ROUGE-L {out['rougeL_f1']:.2f}</td>"
                    f"<td class='text'>{mark_spans(out['output'], out.get('leaked_spans', []))}</td></tr>")
    return f"{STYLE}<table class='qru-probes'>{''.join(rows)}</table>"


__all__ = ["SORTS", "leak_scores", "leaked_share", "mark_spans", "ordered", "output_keys", "probe_html"]
