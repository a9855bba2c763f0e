"""Text cleaning and PII redaction: pure Python (no torch), so that the torch-free ONNX
runtime (``longmm.deploy.runtime``) cleans text exactly as training did. The data pipeline
uses it through ``longmm.data.text``."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

NormalForm = Literal["NFC", "NFKC", "NFD", "NFKD"]

# ---------------------------------------------------------------------------------------------
# Cleaning
# ---------------------------------------------------------------------------------------------

# Whitespace-like controls become a space instead of vanishing, so "a\tb" stays two words.
_WHITESPACE_CONTROLS = frozenset("\t\n\r\v\f\x1c\x1d\x1e\x1f\x85")
_WHITESPACE_RUN = re.compile(r"\s+")


def strip_control_chars(text: str) -> str:
    """Drop control (Cc), format (Cf) and lone surrogate (Cs) code points.

    Format characters (zero-width spaces, BOMs, bidi marks, soft hyphens) are invisible but
    split words into different tokens; whitespace controls are turned into spaces. The cost:
    zero-width joiners go too, which splits emoji sequences and drops ZWNJ in Persian.
    """
    out: list[str] = []
    for ch in text:
        if ch in _WHITESPACE_CONTROLS:
            out.append(" ")
        elif unicodedata.category(ch) not in ("Cc", "Cf", "Cs"):
            out.append(ch)
    return "".join(out)


def clean_text(
    text: str,
    *,
    lowercase: bool = False,
    redact_pii: bool = False,
    form: NormalForm | None = "NFKC",
) -> str:
    """Normalize Unicode, drop invisible characters, collapse whitespace, strip.

    ``form`` is the Unicode normal form (``None`` keeps the text's own); NFKC also folds
    compatibility characters (NBSP, full-width letters, ligatures) into their plain forms.
    Lower-casing happens before redaction so that the ``[EMAIL]``-style placeholders stay
    upper-case and recognisable.
    """
    # Controls go first: a zero-width character between a letter and its combining mark
    # would otherwise stop normalization from composing them.
    text = strip_control_chars(text)
    if form is not None:
        text = unicodedata.normalize(form, text)
    text = _WHITESPACE_RUN.sub(" ", text).strip()
    if lowercase:
        text = text.lower()
    if redact_pii:
        text = _redact(text)
    return text


# ---------------------------------------------------------------------------------------------
# PII redaction
# ---------------------------------------------------------------------------------------------

EMAIL_TOKEN = "[EMAIL]"
PHONE_TOKEN = "[PHONE]"
CARD_TOKEN = "[CARD]"

# ASCII digits only: `\d` would also match Arabic-Indic or full-width digits.
_D = "[0-9]"
# Not glued to a word or to the integer part of a decimal ("3.14159265358").
_BEFORE = r"(?<!\w)(?<![0-9][.,])"
# Not glued to a word, and not the integer part of a decimal ("5551234567.25").
_AFTER = r"(?!\w)(?![.,][0-9])"

_EMAIL = (
    r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]"
)

# Card-shaped: 13-19 contiguous digits, or groups of digits with one consistent separator
# (4-4-4-4, 4-6-5 Amex, 4-4-4-4-3). The digit count and the Luhn check are done in code.
_CARD = (
    rf"{_BEFORE}(?:{_D}{{13,19}}"
    rf"|{_D}{{4}}(?P<csep>[ -]){_D}{{3,6}}(?:(?P=csep){_D}{{3,6}}){{1,3}}){_AFTER}"
)

# Phone-shaped. Every form needs 7+ digits and a phone-like layout, so years (1999), plain
# counts, dates (2024-01-15), ranges (12-15) and decimals (3.14) are left alone. Bare
# seven-digit local numbers (555-1234) are not matched: they look exactly like numeric
# ranges such as 250-1500.
_PHONE_FORMS = (
    # +CC then groups: +1 555 123 4567, +44 (0)20 7946 0958, +4915112345678
    rf"\+{_D}{{1,3}}(?:[ .-]?(?:\({_D}{{1,4}}\)|{_D}{{1,5}})){{1,6}}",
    # (555) 123-4567, (020) 7946 0958
    rf"\({_D}{{2,5}}\)[ .-]?{_D}{{3,4}}[ .-]?{_D}{{4}}",
    # 555-123-4567, 555.123.4567, 555 123 4567, 1-800-555-1234. The last group has four
    # digits so that thousands separators (12.345.678) do not look like a phone number.
    rf"(?:1[ -])?{_D}{{2,5}}(?P<psep>[ .-]){_D}{{3,4}}(?P=psep){_D}{{4}}",
    # 01 23 45 67 89 (pairs after a leading zero)
    rf"0[1-9](?P<fsep>[ .-]){_D}{{2}}(?:(?P=fsep){_D}{{2}}){{3}}",
    # 5551234567: ten or more contiguous digits
    rf"{_D}{{10,15}}",
)
_PHONE = rf"{_BEFORE}(?:{'|'.join(_PHONE_FORMS)}){_AFTER}"

# One scanner with the alternatives in priority order: at each position the regex tries an
# e-mail first (a local part may hold digits), then a card (so that a 16-digit card is not
# taken for a phone number), then a phone number.
_PII = re.compile(rf"(?P<email>{_EMAIL})|(?P<card>{_CARD})|(?P<phone>{_PHONE})")
_PHONE_ONLY = re.compile(_PHONE)

_MIN_PHONE_DIGITS = 7
_MAX_PHONE_DIGITS = 15  # E.164


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that every payment card number satisfies."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _count_digits(text: str) -> int:
    return sum(ch in "0123456789" for ch in text)


def _redact_phone(match: re.Match[str]) -> str:
    n = _count_digits(match.group(0))
    return PHONE_TOKEN if _MIN_PHONE_DIGITS <= n <= _MAX_PHONE_DIGITS else match.group(0)


def _redact_card(span: str) -> str:
    digits = "".join(ch for ch in span if ch in "0123456789")
    if 13 <= len(digits) <= 19:
        # A card-shaped number that fails Luhn is most likely a mistyped card, an account or
        # an order number: still a long personal identifier, so it is redacted as [PHONE]
        # (the generic "long number" placeholder) rather than leaked.
        return CARD_TOKEN if luhn_valid(digits) else PHONE_TOKEN
    # Grouped digits too short or too long for a card ("1234 5678 9012") may still hold a
    # phone number; give them to the phone rule.
    return _PHONE_ONLY.sub(_redact_phone, span)


def _redact_one(match: re.Match[str]) -> str:
    if match.group("email") is not None:
        return EMAIL_TOKEN
    if match.group("card") is not None:
        return _redact_card(match.group(0))
    return _redact_phone(match)


def redact_pii(text: str) -> str:
    """Replace e-mail addresses, card numbers and phone numbers with placeholders.

    ``[EMAIL]`` for addresses; ``[CARD]`` for 13-19 digit numbers (contiguous or in groups
    separated by spaces or dashes) that pass the Luhn check; ``[PHONE]`` for international
    (+CC), parenthesised, dashed, dotted and spaced phone numbers of 7-15 digits, for runs
    of 10-15 digits, and for card-shaped numbers that fail the Luhn check. Cards are tried
    before phones. This is pattern matching, not a guarantee: review before publishing.
    """
    return _PII.sub(_redact_one, text)


# clean_text's keyword shadows the function name inside it.
_redact = redact_pii
