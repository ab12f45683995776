"""Stored and user-supplied strings (run labels, import names, paths, model ids, error messages, job titles, labels
read from stored files) for the places that render Markdown or Plotly's HTML subset: shown as the text they are,
never as a link, an image, HTML or formatting. No streamlit here.

Streamlit renders Markdown (CommonMark with GitHub's extensions, plus its own: ``:red[...]`` directives,
``:material/icon:`` and ``:streamlit:`` icons, emoji shortcodes, ``$math$``, typographic arrows) in st.markdown,
st.write, titles, headers, captions, alerts, progress texts and in widget, button, expander and radio-option labels.
:func:`as_text` makes a string safe for all of them:

- every Markdown-significant ASCII character gets a backslash, which CommonMark drops again on display: those of
  ALWAYS wherever they are, those of INTRA (``_ - . +``) unless they sit between two letters or digits, where
  they mean nothing (``4-bit``, ``0.001``, ``Q4_1``, ``GA+GDR`` stay as they are);
- a WORD JOINER (U+2060, invisible, no line break) goes where a rule still fires on the unescaped text: after a
  colon followed by a character (``http://``, ``:streamlit:``, ``:material/``, emoji shortcodes), after ``www``
  before a dot and after an ``@`` that starts a domain (GitHub's autolinks of bare URLs and e-mail addresses work
  on the text after escapes are resolved, so a backslash cannot stop them), and inside ``->``, ``<-``, ``--``,
  ``>=``, ``<=``, ``~=`` (which streamlit turns into arrows and dashes).

Selectbox and multiselect options, st.text, st.code and table cells are plain text already: pass them raw.
"""
from __future__ import annotations

import html
import re

ALWAYS = "\\`*[](){}<>&$~|:!#="
INTRA = "_-.+"
MARKDOWN = ALWAYS + INTRA
JOINER = "\u2060"
_ESCAPE = re.compile("[" + re.escape(ALWAYS) + "]|(?<![^\\W_])[" + re.escape(INTRA) + "]|[" + re.escape(INTRA)
                     + "](?![^\\W_])")
_BREAK = re.compile(r"(?<=:)(?=\S)|(?<=www)(?=\.)|(?<=@)(?=[-\w]+\.[-\w])|(?<=[-<>~])(?=[-<>=])", re.IGNORECASE)


def as_text(value: object) -> str:
    """``value`` (str() of it) as Markdown that streamlit shows as exactly that text (see the module's rules)."""
    return _ESCAPE.sub(lambda m: "\\" + m.group(), _BREAK.sub(JOINER, str(value)))


def as_plot_text(value: object) -> str:
    """``value`` (str() of it) for a Plotly title, legend name or hover text: ``&``, ``<`` and ``>`` as HTML
    entities, so that Plotly's tags (``<a href>``, ``<b>``, ``<br>``) show as text."""
    return html.escape(str(value), quote=False)


def displayed(markdown: str) -> str:
    """What a reader sees of Markdown made with :func:`as_text` (backslash escapes and word joiners removed):
    ``displayed(as_text(s)) == s`` (for ``s`` without U+2060)."""
    return re.sub(r"\\([" + re.escape(MARKDOWN) + "])", r"\1", markdown).replace(JOINER, "")


__all__ = ["ALWAYS", "INTRA", "JOINER", "MARKDOWN", "as_plot_text", "as_text", "displayed"]
