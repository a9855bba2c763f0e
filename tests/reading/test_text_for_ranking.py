"""What ranking reads: identifiers, numbers and versions as typed; boilerplate ranked last;
sentences joined across hard line wraps."""

from __future__ import annotations

from longmm.reading.boilerplate import is_boilerplate, strip_citations
from longmm.reading.ingest import text_document
from longmm.reading.reader import RetrievalReader
from longmm.reading.retrieve import BM25Retriever, LexicalTokenizer
from longmm.reading.sentences import split_sentences


def test_lexical_tokens_keep_identifiers_whole_and_split() -> None:
    tokens = LexicalTokenizer()("Z_DEFAULT_COMPRESSION deflateInit2 zpipe.c UTF-8 1.2.13 CHUNK")
    for token in ("z_default_compression", "default", "compress", "deflateinit2", "deflat",
                  "init", "zpipe.c", "utf-8", "1.2.13", "chunk"):  # fmt: skip
        assert token in tokens
    assert "what" not in LexicalTokenizer()("What is it?")


def test_bm25_finds_identifiers_and_numbers_as_typed() -> None:
    texts = [
        "The library compresses data in chunks of varying size.",
        "#define CHUNK 16384",
        "Use Z_DEFAULT_COMPRESSION for a compromise between speed and size.",
        "Version 1.2.13 fixes a bug in inflate.",
    ]
    bm25 = BM25Retriever(texts)
    assert bm25.search("What is the value of CHUNK?", 1)[0][0] == 1
    assert bm25.search("Z_DEFAULT_COMPRESSION", 1)[0][0] == 2
    assert bm25.search("What changed in 1.2.13?", 1)[0][0] == 3
    assert bm25.search("16384", 1)[0][0] == 1


def test_boilerplate_chunks_rank_after_content() -> None:
    assert is_boilerplate(
        "^ Jump up to: a b Smith, J. Retrieved 5 May 2010.\n^ Retrieved 3 June 2011."
    )
    assert is_boilerplate("Anything at all.", ("History", "References"))
    assert not is_boilerplate("The harbour was built in 1820 by the town council.")
    assert strip_citations("built in 1820.[12] It grew.[citation needed]") == (
        "built in 1820.  It grew. "
    )
    filler = " ".join(f"Ships of line {i} sailed past the pier every morning." for i in range(12))
    refs = "".join(
        f"- Smith, J. ({2000 + i}). When the harbour was built. Retrieved 5 May {2010 + i}.\n"
        for i in range(12)
    )
    text = (
        f"# Harbour\n\nThe harbour was built in 1820 by the town council.\n\n{filler}\n\n"
        f"## References\n\n{refs}"
    )
    reader = RetrievalReader(strategy="bm25", top_k=1)
    index = reader.index([text_document(text, "harbour.md")])
    assert index.boilerplate.any()
    answer = reader.answer("When was the harbour built?", index)
    assert "town council" in answer.evidence[0].text


def test_sentences_continue_across_a_hard_wrap() -> None:
    text = "The default weight value is\n50 for new users. Other text.\n- a list item\n- another"
    pieces = [text[a:b] for a, b in split_sentences(text)]
    assert pieces[0] == "The default weight value is\n50 for new users."
    assert pieces[1:] == ["Other text.", "- a list item", "- another"]
    title = "Release notes\nThe build is faster."
    assert [title[a:b] for a, b in split_sentences(title)] == [
        "Release notes",
        "The build is faster.",
    ]
