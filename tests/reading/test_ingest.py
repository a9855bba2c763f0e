"""Reading txt, md, html, pdf and multimodal jsonl files that the tests write; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from longmm.errors import DataError
from longmm.reading import Chunker, load_document, load_documents
from longmm.reading.enhance import WordCounter


def write_pdf(path: Path, pages: list[list[str]]) -> None:
    """A minimal PDF: one Helvetica text line per entry, top to bottom, on each page."""

    def escape(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objects: list[bytes] = []
    n_pages = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for lines in pages:
        ops = ["BT", "/F1 11 Tf", "14 TL", "50 780 Td"]
        for line in lines:
            ops.append(f"({escape(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        page_id = len(objects) + 1
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_id + 1} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    path.write_bytes(bytes(out))


BODY = [
    "Long documents are read in pieces, and every piece keeps the place it came",
    "from, so that an answer can cite the page, the section and the characters of",
    "its evidence. This page was written by a tiny PDF writer inside the test, and",
    "the reader has to join the lines of each paragraph again. A word is hyphen-",
    "ated across a line break here, and the reader must join it back together.",
]


def test_pdf_pages_headers_footers_and_hyphenation(tmp_path: Path) -> None:
    pages = []
    for p, word in enumerate(["alpha", "beta", "gamma", "delta"], 1):
        lines = ["ACME Quarterly Report - Confidential", f"Part {word.title()}"]
        lines += [f"Page {p} says the secret code is {1000 + p}. " + BODY[0], *BODY[1:]]
        lines += [f"The {word} page ends with this sentence, which no other page has."]
        lines += [f"- {p} -"]
        pages.append(lines)
    path = tmp_path / "report.pdf"
    write_pdf(path, pages)
    doc = load_document(path)
    assert doc.meta["pages"] == 4
    assert "ACME Quarterly Report" not in doc.text  # running header dropped
    assert "- 3 -" not in doc.text  # page-number footer dropped
    assert "hyphenated across" in doc.text
    assert "came from, so that" in doc.text  # hard-wrapped lines joined
    for p in range(1, 5):
        at = doc.text.index(f"secret code is {1000 + p}")
        assert doc.page_at(at) == p
    chunks = Chunker(max_tokens=40, overlap_tokens=8, counter=WordCounter()).chunk(doc)
    assert all(c.text == doc.text[c.start : c.end] for c in chunks)
    assert {c.page for c in chunks} == {1, 2, 3, 4}


def test_pdf_without_text_and_broken_pdf(tmp_path: Path) -> None:
    blank = tmp_path / "scan.pdf"
    write_pdf(blank, [[], []])
    with pytest.raises(DataError, match=r"scan.pdf: no text in the PDF's 2 pages"):
        load_document(blank)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    with pytest.raises(DataError, match="broken.pdf"):
        load_document(broken)


HTML = """<!doctype html><html><head><title>T</title><style>p {color: red}</style>
<script>var secret = "do not read";</script></head><body>
<nav><a href="/">Home</a> | <a href="/about">About us</a></nav>
<header class="site-header">Site banner text</header>
<div class="cookie-banner">We use cookies.</div>
<main>
<h1>Contract of Sale</h1>
<p>This contract is made between <b>Alice</b> and <a href="#">Bob</a>.<br>It starts today.</p>
<h2>Payment</h2>
<p>The buyer pays 5,000 euros within 30 days.</p>
<ul><li>first instalment: 2,000 euros</li><li>second instalment: 3,000 euros
  <ul><li>due in June</li></ul></li></ul>
<table><caption>Schedule</caption><tr><th>Item</th><th>Price</th></tr>
<tr><td>Car</td><td>5,000</td></tr></table>
<pre>code   stays
   as it is</pre>
</main>
<footer>Copyright 2024 Example Inc.</footer>
</body></html>"""


def test_html_main_content_structure_and_boilerplate(tmp_path: Path) -> None:
    path = tmp_path / "contract.html"
    path.write_text(HTML, encoding="utf-8")
    doc = load_document(path)
    text = doc.text
    for gone in ("do not read", "Home", "Site banner", "cookies", "Copyright", "color: red"):
        assert gone not in text
    assert "This contract is made between Alice and Bob.\nIt starts today." in text
    kinds = [(b.kind, text[b.start : b.end].split("\n")[0]) for b in doc.blocks]
    assert kinds[0] == ("heading", "Contract of Sale")
    assert ("heading", "Payment") in kinds
    lst = next(b for b in doc.blocks if b.kind == "list")
    assert text[lst.start : lst.end] == (
        "- first instalment: 2,000 euros\n- second instalment: 3,000 euros\n  - due in June"
    )
    table = next(b for b in doc.blocks if b.kind == "table")
    assert text[table.start : table.end] == "Table: Schedule\nItem | Price\nCar | 5,000"
    assert doc.section_at(text.index("5,000 euros within")) == ("Contract of Sale", "Payment")
    chunks = Chunker(max_tokens=64, overlap_tokens=8, counter=WordCounter()).chunk(doc)
    for block in (lst, table):  # small lists and tables are never cut
        assert any(c.start <= block.start and block.end <= c.end for c in chunks)
    assert all(c.text == doc.text[c.start : c.end] for c in chunks)


def test_markdown_sections_and_raw_offsets(tmp_path: Path) -> None:
    raw = (
        "# Guide\n\nIntro   text here.\n\n## Install\n\nRun  the installer.\n\n```\nx  =  1\n```\n"
    )
    path = tmp_path / "guide.md"
    path.write_text(raw, encoding="utf-8")
    doc = load_document(path)
    at = doc.text.index("Run the installer.")
    assert doc.section_at(at) == ("Guide", "Install")
    s, e = doc.raw_span(at, at + len("Run the installer."))
    assert raw[s:e] == "Run  the installer."
    assert [b.kind for b in doc.blocks] == ["heading", "paragraph", "heading", "paragraph", "code"]


def test_multimodal_jsonl_assets_at_their_positions(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "fig.png")
    (tmp_path / "clip.wav").write_bytes(b"RIFF....WAVE")
    lines = [
        {"heading": "Results", "level": 1},
        {"text": "The model reads figures.\n\nAnd it listens to clips."},
        {"image": "fig.png", "caption": "a handwritten digit", "label": "Figure 12", "digit": 7},
        {"page": 2},
        {"audio": "clip.wav"},
        {"text": "The end."},
    ]
    path = tmp_path / "doc.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    doc = load_document(path)
    fig, clip = doc.assets
    assert (fig.kind, fig.label, fig.caption, fig.meta) == (
        "image",
        "Figure 12",
        "a handwritten digit",
        {"digit": 7},
    )
    assert doc.text[fig.start : fig.end] == "[Figure 12: a handwritten digit]"
    assert doc.text[clip.start : clip.end] == "[Audio clip 1]"
    assert Path(fig.path) == (tmp_path / "fig.png").resolve()
    assert doc.page_at(fig.start) == 1 and doc.page_at(clip.start) == 2
    assert doc.section_at(clip.start) == ("Results",)
    chunks = Chunker(max_tokens=16, overlap_tokens=0, counter=WordCounter()).chunk(doc)
    with_fig = [c for c in chunks if 0 in c.assets]
    assert with_fig and all(fig.start >= c.start and fig.end <= c.end for c in with_fig)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"doc.jsonl:2: not valid JSON"),
        ('{"image": "missing.png"}', r"doc.jsonl:2: image file not found"),
        ('{"text": "a", "heading": "b"}', r"doc.jsonl:2: each line needs exactly one"),
        ('{"heading": "x", "level": 9}', r"doc.jsonl:2: 'level' must be an integer 1-6"),
        ("[1, 2]", r"doc.jsonl:2: expected a JSON object"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "doc.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_document(path)


def test_bad_documents_get_clear_errors(tmp_path: Path) -> None:
    cases = {
        "empty.txt": (b"", "empty document"),
        "blank.md": (b"  \n\n \t\n", "empty document"),
        "binary.txt": (bytes(range(256)) * 4, "binary data, not a text document"),
        "garbled.txt": (("@#$%^&*(){}[]<>~`|\\/" * 50 + "ok").encode(), "garbled text"),
        "mojibake.txt": ((("\ufffd" * 30 + " words ") * 10).encode(), "garbled text"),
        "image.png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), "binary data"),
        "report.docx": (b"PK\x03\x04 text", r"\.docx files are not supported; longmm reads "),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DataError, match=rf"{name}: {message}"):
            load_document(path)
    big = tmp_path / "big.txt"
    big.write_text("word " * 1000, encoding="utf-8")
    with pytest.raises(DataError, match=r"big.txt: document too long: 5,000 characters") as err:
        load_document(big, max_chars=4000)
    assert "--max-chars" in str(err.value)  # names the option that raises the limit
    with pytest.raises(DataError, match="no such file"):
        load_document(tmp_path / "nope.txt")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match="no documents in this folder"):
        load_documents([tmp_path / "sub"])


def test_a_broken_pdf_gives_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Length 99 >>\nstream\n\xbd3\x11)w")
    with pytest.raises(DataError, match=r"broken.pdf: not a readable PDF"):
        load_document(broken)
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""  # no pypdf warnings printed before our error
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]


def test_encodings_and_folders(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes("Caf\xe9 cr\xe8me, a Windows file.".encode("cp1252"))
    (tmp_path / "b.txt").write_text("UTF-16 text with a BOM.", encoding="utf-16")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    docs = load_documents([tmp_path])
    assert [Path(d.source).name for d in docs] == ["a.txt", "b.txt"]
    assert docs[0].text == "Café crème, a Windows file."
    assert docs[1].text == "UTF-16 text with a BOM."
