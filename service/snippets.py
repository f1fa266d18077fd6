"""Search-result snippets: the stretch of a document that holds the most query words.

Linear in the document's length: the query words' positions are found in one pass, and a
sliding window over them counts the distinct words inside (the same window the quadratic
version picked: for each occurrence, a window starting a quarter of its width before it; the
first with the most distinct words wins).
"""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    "a an and are as at be by did do does for from has have how in is it of on or that the "
    "this to was were what when where which who whom whose why with".split()
)


def query_terms(query: str) -> set[str]:
    return {w for w in (m.group().lower() for m in _WORD.finditer(query)) if w not in _STOP}


def best_window(hits: list[tuple[int, str]], chars: int) -> int:
    """Start of the window of ``chars`` characters with the most distinct words, ``hits`` being
    ``(position, word)`` in text order; windows start a quarter width before each hit."""
    best, start = -1, 0
    inside: Counter[str] = Counter()
    lo = hi = 0  # hits[lo:hi] lie in the current window
    for pos, _ in hits:
        s = max(0, pos - chars // 4)
        while hi < len(hits) and hits[hi][0] < s + chars:
            inside[hits[hi][1]] += 1
            hi += 1
        while lo < hi and hits[lo][0] < s:
            word = hits[lo][1]
            inside[word] -= 1
            if not inside[word]:
                del inside[word]
            lo += 1
        if len(inside) > best:
            best, start = len(inside), s
    return start


def snippet(text: str, query: str, chars: int) -> str:
    """About ``chars`` characters of ``text`` around the stretch holding the most query words."""
    if len(text) <= chars:
        return text
    terms = query_terms(query)
    hits = [(m.start(), w) for m in _WORD.finditer(text) if (w := m.group().lower()) in terms]
    start = best_window(hits, chars) if hits else 0
    start = min(start, len(text) - chars)
    if start > 0:  # begin at a word
        space = text.find(" ", start, start + 30)
        start = space + 1 if space >= 0 else start
    end = start + chars
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + chars // 2 else end
    return ("…" if start > 0 else "") + text[start:end].strip() + ("…" if end < len(text) else "")
