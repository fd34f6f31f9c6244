"""English integers as words ("11" -> "eleven", "1,024" -> "one thousand twenty four"): a text
and what is heard must spell numbers the same way, for the aligner and for the error rate."""

from __future__ import annotations

import re

ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?!\d)|\d+")
MAX_SPOKEN = 10**12  # longer digit strings (codes, phone numbers) are read digit by digit


def number_words(n: int) -> list[str]:
    if n < 20:
        return [ONES[n]]
    if n < 100:
        return [TENS[n // 10]] + ([ONES[n % 10]] if n % 10 else [])
    for size, name in SCALES:
        if n >= size:
            rest = number_words(n % size) if n % size else []
            return [*number_words(n // size), name, *rest]
    raise AssertionError("unreachable")


def is_year(n: int) -> bool:
    """Four digits read in pairs, as years usually are ("1999", "2024"; not "2000")."""
    return 1100 <= n <= 1999 or 2010 <= n <= 2099


def year_words(n: int) -> list[str]:
    century, rest = divmod(n, 100)
    if rest == 0:
        return [*number_words(century), "hundred"]
    return [*number_words(century), *(["oh"] if rest < 10 else []), *number_words(rest)]


def spell_numbers(text: str) -> str:
    """`text` with every run of digits (thousands commas allowed) written out in words."""

    def spell(match: re.Match[str]) -> str:
        digits = match.group(0).replace(",", "")
        value = int(digits)
        if value >= MAX_SPOKEN or (len(digits) > 1 and digits.startswith("0")):
            return " ".join(ONES[int(d)] for d in digits)
        if "," not in match.group(0) and is_year(value):
            return " ".join(year_words(value))
        return " ".join(number_words(value))

    return NUMBER.sub(lambda m: f" {spell(m)} ", text)
