"""Text preprocessing: cleaning, PII redaction, tokenizer, token dropout."""

from __future__ import annotations

import string
import unicodedata

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longmm.data.text import (
    CARD_TOKEN,
    EMAIL_TOKEN,
    PHONE_TOKEN,
    SPECIAL_TOKENS,
    TextTokenizer,
    TokenDropout,
    clean_text,
    luhn_valid,
    redact_pii,
)
from longmm.errors import DataError

# --------------------------------------------------------------------------------------------
# clean_text
# --------------------------------------------------------------------------------------------


def test_clean_text_removes_control_and_format_chars() -> None:
    assert clean_text("a\x00b\x07c\x1b") == "abc"
    assert clean_text("zero\u200bwidth\ufeff soft\u00adhyphen\u202e") == "zerowidth softhyphen"


def test_clean_text_keeps_tab_and_newline_as_whitespace_and_collapses() -> None:
    assert clean_text("  one\ttwo\n\nthree \r\n four  ") == "one two three four"


def test_clean_text_nbsp_becomes_a_plain_space() -> None:
    assert clean_text("10\u00a0km \u00a0 away") == "10 km away"
    # Without compatibility folding the NBSP is still whitespace, so it collapses too.
    assert clean_text("10\u00a0km", form="NFC") == "10 km"


def test_clean_text_composed_and_decomposed_agree() -> None:
    composed = "Caf\u00e9 na\u00efve"
    decomposed = "Cafe\u0301 nai\u0308ve"
    assert composed != decomposed
    assert clean_text(composed) == clean_text(decomposed) == composed
    assert clean_text(composed, form="NFD") == decomposed
    # A zero-width space between a letter and its accent must not block composition.
    assert clean_text("Cafe\u200b\u0301") == "Caf\u00e9"


def test_clean_text_nfkc_folds_compatibility_forms() -> None:
    assert clean_text("\uff21\uff22\uff23 \ufb01le") == "ABC file"
    assert clean_text("\uff21\uff22\uff23", form=None) == "\uff21\uff22\uff23"


def test_clean_text_lowercase_and_redaction_keep_placeholders_upper() -> None:
    out = clean_text("Mail ME at Bob@Example.COM ", lowercase=True, redact_pii=True)
    assert out == f"mail me at {EMAIL_TOKEN}"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_clean_text_is_idempotent(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once
    assert once == once.strip()
    assert "  " not in once


# --------------------------------------------------------------------------------------------
# redact_pii
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail john.doe+tag@example.co.uk.", f"mail {EMAIL_TOKEN}."),
        ("a@b.io, c_d@mail-server.example.org", f"{EMAIL_TOKEN}, {EMAIL_TOKEN}"),
        ("call (555) 123-4567 now", f"call {PHONE_TOKEN} now"),
        ("555-123-4567", PHONE_TOKEN),
        ("555.123.4567", PHONE_TOKEN),
        ("555 123 4567", PHONE_TOKEN),
        ("1-800-555-1234", PHONE_TOKEN),
        ("+1 555 123 4567", PHONE_TOKEN),
        ("+1-555-123-4567", PHONE_TOKEN),
        ("+44 20 7946 0958", PHONE_TOKEN),
        ("+44 (0)20 7946 0958", PHONE_TOKEN),
        ("+33 1 23 45 67 89", PHONE_TOKEN),
        ("01 23 45 67 89", PHONE_TOKEN),
        ("(020) 7946 0958", PHONE_TOKEN),
        ("+4915112345678", PHONE_TOKEN),
        ("tel:5551234567.", f"tel:{PHONE_TOKEN}."),
        ("card 4111 1111 1111 1111 ok", f"card {CARD_TOKEN} ok"),
        ("4111-1111-1111-1111", CARD_TOKEN),
        ("4111111111111111", CARD_TOKEN),
        ("amex 3782 822463 10005", f"amex {CARD_TOKEN}"),
        ("6011 1111 1111 1111 110", CARD_TOKEN),  # 19 digits, 4-4-4-4-3
        # Card-shaped but failing Luhn: redacted as a generic long number, not kept.
        ("4111 1111 1111 1112", PHONE_TOKEN),
        ("id 4111111111111112", f"id {PHONE_TOKEN}"),
    ],
)
def test_redact_pii_examples(text: str, expected: str) -> None:
    assert redact_pii(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "in 1999 and 2005 we had 12 apples and 345 pears",
        "pi is 3.14, or 3.14159265358979 to be precise",
        "on 2024-01-15 at 10:30, pages 12-15, ranges 250-1500",
        "the city has 1.234.567 people, or 12.345.678 with suburbs, or 1,234,567",
        "version 1.2.3 of RFC 5322",
        "price $1,299.99; 100%; 0.5 mm",
        "user at example dot com",
        "x = 5551234567.25",
    ],
)
def test_redact_pii_leaves_ordinary_numbers(text: str) -> None:
    assert redact_pii(text) == text


def test_card_check_runs_before_phone() -> None:
    # 16 contiguous digits would also fit a long phone rule; Luhn decides it is a card.
    assert redact_pii("pay 5555555555554444") == f"pay {CARD_TOKEN}"


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("4111 1111")
    assert not luhn_valid("")


@settings(max_examples=300, deadline=None)
@given(st.emails())
def test_generated_emails_are_redacted(email: str) -> None:
    assert redact_pii(f"write to {email} today") == f"write to {EMAIL_TOKEN} today"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="0123456789@")))
def test_text_without_digits_or_at_is_unchanged(text: str) -> None:
    assert redact_pii(text) == text


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable")


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="0123456789", min_size=15, max_size=15),
    st.sampled_from(["", " ", "-"]),
)
def test_generated_cards_are_redacted(body: str, sep: str) -> None:
    number = _luhn_complete(str(4 + int(body[0]) % 3) + body[1:])
    formatted = sep.join(number[i : i + 4] for i in range(0, 16, 4))
    assert redact_pii(f"card: {formatted}, thanks") == f"card: {CARD_TOKEN}, thanks"


@settings(max_examples=200, deadline=None)
@given(
    st.integers(200, 999),
    st.integers(200, 999),
    st.integers(0, 9999),
    st.sampled_from(
        [
            "({a}) {e}-{n}",
            "{a}-{e}-{n}",
            "{a}.{e}.{n}",
            "{a} {e} {n}",
            "+1 {a} {e} {n}",
            "+1-{a}-{e}-{n}",
            "+49 {a} {e}{n}",
            "{a}{e}{n}",
        ]
    ),
)
def test_generated_phones_are_redacted(area: int, exchange: int, line: int, form: str) -> None:
    phone = form.format(a=area, e=exchange, n=f"{line:04d}")
    assert redact_pii(f"call {phone}, ok?") == f"call {PHONE_TOKEN}, ok?"


# --------------------------------------------------------------------------------------------
# TextTokenizer
# --------------------------------------------------------------------------------------------

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! It's a test of the well-known tokenizer.",
    "Don't panic: 3.14 is close to pi (roughly).",
    "Long documents need careful reading, chunking and retrieval.",
    "A multimodal model reads text, images and audio together.",
] * 10


@pytest.fixture(scope="module", params=["bpe", "wordpiece"])
def tokenizer(request: pytest.FixtureRequest) -> TextTokenizer:
    return TextTokenizer.train(CORPUS, kind=request.param, vocab_size=400, min_frequency=1)


def test_special_token_ids_are_fixed(tokenizer: TextTokenizer) -> None:
    ids = [tokenizer.backend.token_to_id(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS)))
    assert tokenizer.pad_id == 0 and tokenizer.unk_id == 1
    assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (2, 3, 4)
    assert (tokenizer.bos_id, tokenizer.eos_id) == (5, 6)
    assert len(SPECIAL_TOKENS) < tokenizer.vocab_size <= 400


def test_save_load_round_trip(tokenizer: TextTokenizer, tmp_path) -> None:
    written = tokenizer.save(tmp_path / "run")
    assert written == tmp_path / "run" / "tokenizer.json"
    assert [p.name for p in written.parent.iterdir()] == ["tokenizer.json"]  # no temp left
    loaded = TextTokenizer.load(tmp_path / "run")
    assert loaded.kind == tokenizer.kind
    assert loaded.vocab_size == tokenizer.vocab_size
    for text in [*CORPUS[:5], "unseen words: zebra quokka"]:
        assert loaded.encode(text) == tokenizer.encode(text)
    explicit = tokenizer.save(tmp_path / "elsewhere" / "tok.json")
    assert TextTokenizer.load(explicit).encode(CORPUS[0]) == tokenizer.encode(CORPUS[0])


def test_decode_round_trip(tokenizer: TextTokenizer) -> None:
    for text in CORPUS[:5]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=string.printable + "éüß€✓😀", max_size=80))
def test_bpe_decodes_any_text_exactly(text: str) -> None:
    tok = _bpe()
    assert tok.decode(tok.encode(text)) == unicodedata.normalize("NFKC", text)


_BPE: list[TextTokenizer] = []


def _bpe() -> TextTokenizer:
    if not _BPE:
        _BPE.append(TextTokenizer.train(CORPUS, kind="bpe", vocab_size=400, min_frequency=1))
    return _BPE[0]


def test_encode_batch_pads_to_longest(tokenizer: TextTokenizer) -> None:
    texts = ["hello world", "the quick brown fox jumps over the lazy dog", ""]
    ids, mask = tokenizer.encode_batch(texts)
    lengths = [len(tokenizer.encode(t)) for t in texts]
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.shape == mask.shape == (3, max(lengths))
    assert mask.sum(1).tolist() == lengths
    assert (ids[~mask] == tokenizer.pad_id).all()
    for row, text in zip(ids, texts, strict=True):
        assert row[: len(tokenizer.encode(text))].tolist() == tokenizer.encode(text)
        # Padding is special and is skipped.
        assert tokenizer.decode(row) == tokenizer.decode(tokenizer.encode(text))


def test_encode_truncates_and_frames(tokenizer: TextTokenizer) -> None:
    text = CORPUS[0]
    full = tokenizer.encode(text)
    assert tokenizer.encode(text, max_length=3) == full[:3]
    framed = tokenizer.encode(text, max_length=5, bos=True, eos=True)
    assert framed == [tokenizer.bos_id, *full[:3], tokenizer.eos_id]
    ids, _ = tokenizer.encode_batch([text, "hi"], max_length=4)
    assert ids.shape == (2, 4)
    assert tokenizer.decode(framed) == tokenizer.decode(full[:3])
    with pytest.raises(ValueError):
        tokenizer.encode(text, max_length=1, bos=True, eos=True)


def test_empty_batch_has_a_valid_shape(tokenizer: TextTokenizer) -> None:
    ids, mask = tokenizer.encode_batch(["", ""])
    assert ids.shape == (2, 1) and not mask.any()


def test_lowercase_option() -> None:
    tok = TextTokenizer.train(CORPUS, kind="wordpiece", vocab_size=300, lowercase=True)
    assert tok.encode("HELLO World") == tok.encode("hello world")


def test_train_needs_text() -> None:
    with pytest.raises(DataError):
        TextTokenizer.train([])
    with pytest.raises(ValueError):
        TextTokenizer.train(CORPUS, kind="sentencepiece")  # type: ignore[arg-type]


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        TextTokenizer.load(tmp_path / "missing")
    bad = tmp_path / "bad" / "tokenizer.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(DataError, match=str(bad)):
        TextTokenizer.load(bad)


# --------------------------------------------------------------------------------------------
# TokenDropout
# --------------------------------------------------------------------------------------------


def _ids_and_mask() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(7, 100, (8, 50))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[:, 30:] = False
    return ids.masked_fill(~mask, 0), mask


def test_token_dropout_is_identity_in_eval() -> None:
    ids, mask = _ids_and_mask()
    drop = TokenDropout(p=0.9).eval()
    assert drop(ids, mask) is ids


def test_token_dropout_replaces_real_tokens_only() -> None:
    torch.manual_seed(0)
    ids, mask = _ids_and_mask()
    drop = TokenDropout(p=0.3, unk_id=1, pad_id=0).train()
    out = drop(ids, mask)
    changed = out != ids
    assert changed.any()
    assert not changed[~mask].any()
    assert (out[changed] == 1).all()
    share = changed[mask].float().mean().item()
    assert 0.2 < share < 0.4
    assert (ids[:, 30:] == 0).all()  # input untouched


def test_token_dropout_extremes_and_default_mask() -> None:
    ids, mask = _ids_and_mask()
    assert torch.equal(TokenDropout(p=0.0).train()(ids, mask), ids)
    out = TokenDropout(p=1.0).train()(ids)  # mask derived from pad_id
    assert (out[mask] == 1).all() and (out[~mask] == 0).all()
    with pytest.raises(ValueError):
        TokenDropout(p=1.5)
