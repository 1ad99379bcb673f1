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


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text each token adds, read from the decoded prefix (so byte pieces of one character show
    as '' and the character on the token that completes it)."""
    out, prev = [], ""
    for i in range(len(ids)):
        cur = tokenizer.decode(
            list(ids[: i + 1]), skip_special_tokens=False, clean_up_tokenization_spaces=False
        ).rstrip("\ufffd")
        if cur.startswith(prev):
            out.append(cur[len(prev) :])
        else:
            out.append(
                tokenizer.decode(
                    [ids[i]], skip_special_tokens=False, clean_up_tokenization_spaces=False
                )
            )
        prev = cur
    return out


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
