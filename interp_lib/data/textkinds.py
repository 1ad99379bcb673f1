"""Which of the seven kinds of text a document is: a rule-based classifier for corpus reports.

The probe set and the evaluation set (:mod:`interp_lib.data.probes`,
:mod:`interp_lib.data.evalset`) label text by kind: code, URLs, maths, non-English, social
media with emoji, formal (legal, academic) and conversational. A training corpus should be
described in the same terms, so that its composition says what the SAEs trained on it saw of
each kind. :func:`text_kind` puts a document in one of those kinds, or ``"prose"`` (plain English
prose, the corpus's documentation and docstrings) when none fits, from character and word
statistics:

- **non-English**: a quarter or more of the letters are non-ASCII, or (20 words or more) common
  short words of French, German, Spanish, Italian, Portuguese or Dutch outnumber English ones
  two to one;
- **code**: four lines in ten or more look like statements of Python, C-family languages,
  shell, SQL or YAML;
- **social**: emoji (pictographs, dingbats, skin tones, ZWJ sequences) or ``@handles`` and
  ``#hashtags``, densely;
- **URLs**: a fifth or more of the characters belong to web addresses, paths in ``href`` /
  ``src`` attributes or e-mail addresses;
- **maths**: LaTeX commands, ``$...$``, ``.. math::``, Unicode maths symbols and lines of
  equations;
- **conversational**: first and second person, questions, contractions and quoted turns;
- **formal**: legal or academic vocabulary (``shall``, ``hereby``, ``pursuant``, ``we
  propose``, ``participants``, ...).

The rules are tried in that order; the first that fires wins. They are coarse by design (a
report, not a benchmark): :func:`kind_accuracy` measures them on the shipped labelled texts
and the tests hold them to it.
"""

from __future__ import annotations

import re
from typing import Iterable

from interp_lib.data.probes import CATEGORIES

__all__ = ["TEXT_KINDS", "text_kind", "kind_accuracy"]

TEXT_KINDS: tuple[str, ...] = CATEGORIES + ("prose",)
"""What :func:`text_kind` returns: the seven labelled kinds, then ``"prose"`` for the rest."""

_ENGLISH = frozenset(
    "the a an of to in and is are was be been for that this it its as on by or not with from "
    "can you we if which will at has have when but all any there these those then than into "
    "must may should one also only more such i my me your our they he she his her what how".split()
)
_FOREIGN = (
    frozenset(  # common short words of French, German, Spanish, Italian, Portuguese, Dutch
        "le la les des du une et est pour dans qui que sur pas par au aux avec ce cette sont nous "
        "vous der die das und ist nicht ein eine zu den mit von sich auf dem des wir sie ich es "
        "auch "
        "el los las del y en por con para una es que se lo al como pero muy más "
        "il di che è per non sono della gli un nel alla questo "
        "o os da do em um uma não para com são mas "
        "het een van en ik je niet zijn op te dat wat er".split()
    )
    - _ENGLISH
    - set("abcdefghijklmnopqrstuvwxyz")
)
_EMOJI = re.compile(
    "[\U0001f300-\U0001faff\u2600-\u27bf\U0001f1e6-\U0001f1ff\u200d\ufe0f\U0001f3fb-\U0001f3ff]"
)
_HANDLE = re.compile(  # @name, #tag; not a colour (#87AF00) nor a C directive (#define)
    r"(?:^|\s)(?!#[0-9A-Fa-f]{3,8}\b|#(?:define|include|if|ifdef|ifndef|endif|else|elif|pragma|"
    r"error|undef|line)\b)[@#][A-Za-z_]\w{1,30}"
)
_URL = re.compile(
    r"(?:https?|ftp)://\S+|www\.\S+|[\w.+-]+@[\w-]+\.[\w.-]+|"
    r"(?:href|src|action)=[\"'][^\"']*[\"']|\b[\w-]+(?:\.[\w-]+)+/[\w./?=&%#~+-]*"
)
_LATEX = re.compile(
    r"\\(?:frac|sum|int|prod|sqrt|alpha|beta|gamma|delta|epsilon|lambda|mu|sigma|theta|pi|"
    r"infty|partial|nabla|cdot|times|leq|geq|neq|in|mathbb|mathcal|mathrm|left|right|begin|end|"
    r"lim|log|exp|sin|cos|to|forall|exists|subseteq|cup|cap|le|ge|approx|equiv|hat|bar|vec)"
    r"(?![A-Za-z])|\$[^$\n]{1,80}\$|\.\. math::|:math:`"
)
_MATH_SYMBOLS = re.compile("[∫∑∏√∞≈≡≠≤≥∈∉⊂⊆∪∩∀∃∂∇±×÷·−²³αβγδεθλμπσφωΔΣΩ→⇒⟹]")
_EQUATION = re.compile(r"^[\s\w()^*/+.,'-]*(?:[a-zA-Z]\^?\d?|\))\s*(?:=|<=|>=|≤|≥)\s*[-\w(√π]")
_CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from [\w.]+ import |return\b|if\s*\(|for\s*\(|while\s*\(|"
    r"if .*:$|elif .*:$|else\s*[:{]|for .* in .*:$|try\s*[:{]|except\b.*:$|with .*:$|raise\b|"
    r"@[\w.]+|#include|#define|#if|#endif|(?:const|let|var|function|export|async)\s|"
    r"(?:int|void|char|float|double|static|struct|typedef|fn|pub|let mut|impl|use)\s|"
    r"(?:SELECT|FROM|WHERE|JOIN|GROUP BY|ORDER BY|INSERT|UPDATE|CREATE|ALTER)\b|"
    r"(?:echo|export|cd|sudo|apt|pip|npm|git|mkdir|rm|cp|docker)\s|\$ |"
    r"[\w.\[\]'\"]+\s*(?:[-+*/|&%]?=)\s*\S|[\w.]+\(.*\)\s*[;{]?$|[)\]}][,;]?$|"
    r"[\w-]+:\s*$|- [\w-]+:\s|[\w.]+\s*[:=]\s*[\[{]|//|/\*|\*/|\*\s)"
)
_CONVERSATION = re.compile(
    r"\b(?:I|I'm|I've|I'd|I'll|you|you're|we're|don't|can't|didn't|isn't|it's|that's|"
    r"yeah|okay|ok|hey|hi|oh|well|so|anyway|right|honestly|thanks|sorry|please|lol)\b",
    re.IGNORECASE,
)
_FORMAL = re.compile(
    r"\b(?:shall|hereby|herein|thereof|pursuant|whereas|notwithstanding|agreement|party|"
    r"parties|liability|liable|warranty|warranties|licen[cs]e[ed]?|licensor|licensee|"
    r"provided that|in accordance with|subject to|section|clause|respectively|"
    r"we (?:propose|show|study|find|present|estimate|argue)|results? (?:suggest|show)|"
    r"furthermore|moreover|hence|thus|whereby|abstract|hypothesis|significant(?:ly)?|"
    r"committee|regulation|article|paragraph|obligations?|terms|notice|study|participants|"
    r"limitations|findings|acknowledge|examine|extent|resolution|shareholders|directors|"
    r"company|pursuant|accordance|hereinafter|empirical|methodology|respondents)\b",
    re.IGNORECASE,
)


def _share(pattern: re.Pattern, text: str) -> float:
    """Fraction of ``text``'s characters inside matches of ``pattern``."""
    return sum(len(m.group()) for m in pattern.finditer(text)) / max(len(text), 1)


def text_kind(text: str) -> str:
    """The kind of ``text``: one of :data:`TEXT_KINDS` (module doc for the rules)."""
    letters = [c for c in text if c.isalpha()]
    words = re.findall(r"[A-Za-z']+", text)
    n_words = max(len(words), 1)
    if letters and sum(ord(c) > 127 for c in letters) / len(letters) > 0.25:
        return "non_english"
    lower = [w.lower() for w in words]
    foreign = sum(w in _FOREIGN for w in lower)
    if len(words) >= 20 and foreign > 2 * sum(w in _ENGLISH for w in lower):
        return "non_english"
    lines = [ln for ln in text.split("\n") if ln.strip()]
    n_lines = max(len(lines), 1)
    code = sum(1 for ln in lines if _CODE_LINE.match(ln) and not ln.lstrip().startswith("# "))
    if code / n_lines >= 0.4:
        return "python"
    emoji = len(_EMOJI.findall(text))
    handles = len(_HANDLE.findall(text))
    if emoji / n_words > 0.02 or (emoji and handles) or handles / n_words > 0.04:
        return "social"
    if _share(_URL, text) > 0.2:
        return "urls"
    latex = len(_LATEX.findall(text)) + len(_MATH_SYMBOLS.findall(text))
    equations = sum(1 for ln in lines if _EQUATION.match(ln))
    if latex / n_words > 0.03 or (latex + equations) / n_lines > 0.3:
        return "math"
    chatty = len(_CONVERSATION.findall(text)) / n_words
    questions = text.count("?") / n_lines
    quoted = sum(1 for ln in lines if ln.lstrip().startswith(('"', "“", "- ", "A:", "B:")))
    if chatty > 0.08 or (chatty > 0.05 and (questions > 0.2 or quoted / n_lines > 0.3)):
        return "conversational"
    if len(_FORMAL.findall(text)) / n_words > 0.02:
        return "formal"
    return "prose"


def kind_accuracy(texts: Iterable[tuple[str, str]]) -> dict[str, float]:
    """{kind: fraction of ``(text, kind)`` pairs that :func:`text_kind` labels right}."""
    hits: dict[str, list[bool]] = {}
    for text, kind in texts:
        hits.setdefault(kind, []).append(text_kind(text) == kind)
    return {k: sum(v) / len(v) for k, v in hits.items()}
