"""Reading verdicts out of judge and selector replies (arXiv 2511.13027, as in its NeMo-Skills recipe).

Both parsers accept any input and never raise on it: a reply that does not follow the requested
format reads as ``None``, and the caller decides what that means (a random winner in a tournament
game, a sample left out of the judge's yes-rate). Only the final part of a reply is read, the text
after its reasoning, so a verdict the model considered while thinking never counts.
"""

from __future__ import annotations

import re

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"

# "Judgement:" with optional markdown bold around the word ("**Judgement**:" or "**Judgement:**");
# "Judgment" is accepted as well, since models write both spellings.
_JUDGEMENT = re.compile(r"\*{0,2}judge?ment\*{0,2}\s*:", re.IGNORECASE)

# One <best_solution>...</best_solution> block whose content holds no further opening tag, so that
# "<best_solution>1<best_solution>2</best_solution>" reads as its last block, "2".
_BEST_SOLUTION = re.compile(r"<best_solution>((?:(?!<best_solution>).)*?)</best_solution>", re.IGNORECASE | re.DOTALL)
_INDEX = re.compile(r"\d{1,18}", re.ASCII)  # no sign, no decimals; 18 digits stay clear of int()'s length limit


def final_part(text: object) -> str | None:
    """The part of a reply after its reasoning: the text after the last ``</think>``.

    Text without a ``</think>`` is all final, unless it opens a ``<think>``: then the reply was cut off
    while reasoning, has no final part, and gives None. Anything that is not a ``str`` gives None.
    """
    if not isinstance(text, str):
        return None
    end = text.rfind(_THINK_CLOSE)
    if end >= 0:
        return text[end + len(_THINK_CLOSE):]
    if _THINK_OPEN in text:
        return None
    return text


def parse_judgement(text: object) -> bool | None:
    """The judge's verdict: True for "Judgement: Yes", False for "Judgement: No", None if unreadable.

    The verdict is read after the last ``Judgement:`` marker in the final part of the reply (see
    :func:`final_part`), case-insensitively, with markdown bold allowed around the word, the colon
    and the verdict. It is a prefix match, as in the paper's code: "Yes, because ..." and "yes." are
    yes, anything starting with "no" is no. When a reply gives several verdicts the last one decides,
    and a last marker followed by neither word makes the reply unreadable.
    """
    final = final_part(text)
    if final is None:
        return None
    markers = list(_JUDGEMENT.finditer(final))
    if not markers:
        return None
    verdict = final[markers[-1].end():].lstrip(" \t\r\n*").lower()
    if verdict.startswith("yes"):
        return True
    if verdict.startswith("no"):
        return False
    return None


def parse_best_solution(text: object, n: int) -> int | None:
    """The 0-based index of the candidate a GenSelect reply picks, or None.

    The reply names its pick 1-based, ``<best_solution>i</best_solution>`` with ``1 <= i <= n``, in
    its final part (see :func:`final_part`). The last block wins. Its content, stripped, must be a
    plain decimal integer in range: ``0``, ``-1``, ``2.0``, ``two`` and ``n + 1`` give None (the
    paper's code turns ``0`` into index -1, the last candidate; here it is rejected).
    """
    final = final_part(text)
    if final is None:
        return None
    blocks = _BEST_SOLUTION.findall(final)
    if not blocks:
        return None
    content = blocks[-1].strip()
    if not _INDEX.fullmatch(content):
        return None
    index = int(content) - 1
    return index if 0 <= index < n else None
