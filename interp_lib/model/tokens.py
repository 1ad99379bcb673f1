"""Token pieces as text: token ids to display strings, and one convention for split characters.

A byte-level tokenizer may split one character over several tokens (``é`` as two byte tokens).
The convention of this module: **a split character shows once, on the token that completes it,
and the pieces before it show as ''** (:func:`token_strings`, which reads each token's text off
the decoded prefix, or :func:`readable_tokens`, which reads them off the tokenizer's character
offsets). :func:`merge_pieces` folds those '' pieces into the token after them, for
displays that show one cell per character rather than per token.
"""

from __future__ import annotations

from typing import Iterable, Sequence

__all__ = ["token_strings", "token_strings_each", "readable_tokens", "merge_pieces"]


WINDOW = 8
"""Tokens of left context :func:`token_strings` decodes with each token. A character is at most
4 UTF-8 bytes, so the token that completes one starts at most 3 tokens after the character."""


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text each token adds, read from the decoded text up to it (so byte pieces of one
    character show as '' and the character on the token that completes it).

    Each token is decoded with the :data:`WINDOW` tokens before it rather than the whole prefix:
    the text it adds is the same, and the cost is linear in ``len(ids)``, not quadratic."""
    ids = [int(i) for i in ids]
    out = []
    for i in range(len(ids)):
        start = max(0, i - WINDOW)
        prev = _decode(tokenizer, ids[start:i]).rstrip("\ufffd")
        cur = _decode(tokenizer, ids[start : i + 1]).rstrip("\ufffd")
        out.append(cur[len(prev) :] if cur.startswith(prev) else _decode(tokenizer, ids[i : i + 1]))
    return out


def _decode(tokenizer, ids: list[int]) -> str:
    """``ids`` as text, special tokens kept, spaces as they are."""
    if not ids:
        return ""
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def token_strings_each(tokenizer, ids: Iterable[int]) -> list[str]:
    """Each token decoded on its own."""
    return [
        tokenizer.decode([int(i)], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        for i in ids
    ]


def merge_pieces(
    tokens: Sequence[str], values: Sequence[float], peak: int = 0
) -> tuple[list[str], list[float], int]:
    """Fold '' pieces into the token after them (largest value kept); the index ``peak`` follows."""
    out_t: list[str] = []
    out_v: list[float] = []
    new_peak, carry_v, carry_peak = 0, None, False
    for i, (t, v) in enumerate(zip(tokens, values)):
        if t == "" and i < len(tokens) - 1:
            carry_v = v if carry_v is None else max(carry_v, v)
            carry_peak = carry_peak or i == peak
            continue
        if carry_v is not None:
            v = max(v, carry_v)
        if i == peak or carry_peak:
            new_peak = len(out_t)
        out_t.append(t)
        out_v.append(v)
        carry_v, carry_peak = None, False
    return out_t, out_v, new_peak


def readable_tokens(tokenizer, text: str) -> list[str] | None:
    """Token strings that read as the text, by this module's convention: a character split over
    several byte tokens shows once, on the token that completes it, and the pieces before it are
    ''. None if the tokenizer gives no character offsets."""
    try:
        spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError, KeyError):
        return None
    stops = [stop for _, stop in spans["offset_mapping"]]
    out, end = [], 0
    for i, stop in enumerate(stops):
        if i + 1 < len(stops) and stops[i + 1] <= stop:
            out.append("")  # the character goes on: a later piece completes it
            continue
        # From the end of the previous token: a space that the offsets leave out goes with
        # the next token.
        out.append(text[end:stop] if stop > end else "")
        end = max(end, stop)
    return out
