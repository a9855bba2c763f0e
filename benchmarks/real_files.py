"""`longmm read`'s default reader on real documents found on this machine, none written by us:
HTML manuals (bzip2, Ninja, GNU time, the rustdoc and Cargo books, Debian's Python policy),
changelogs and release notes (Rust's RELEASES.md, Valgrind's NEWS, Git 2.20), license texts
(GPL-3, Apache-2.0, MPL-2.0), package READMEs (tqdm and tabulate METADATA) and a spec (dpkg
triggers). Each question was written by reading the document; its references are copied from
the text. A document missing on this machine is skipped (other machines differ).

An answer is right when one of its references occurs in it (case-insensitive, whitespace
folded, not inside a longer word or number: "2" does not match "2300k") and the answer is at
most 200 characters (a short answer, not a whole passage). "Evidence" says whether a reference
occurs in the top three evidence passages.

Run from the repository root: python benchmarks/real_files.py [--answer span|sentence|head]
[--no-rerank] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from longmm.errors import DataError
from longmm.reading import load_document
from longmm.reading.pipeline import ANSWERS, DEFAULT_ANSWER, build_reader

MAX_ANSWER_CHARS = 200
EVIDENCE_TOP = 3

DOC = "/usr/share/doc"
LICENSES = "/usr/share/common-licenses"
RUST = "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html"
SITE = "/work/main/.venv/lib/python3.11/site-packages"

# (absolute path, question, accepted references as they appear in the text)
CASES: list[tuple[str, str, list[str]]] = [
    # bzip2 1.0.8 manual (HTML)
    (
        f"{DOC}/bzip2/manual.html",
        "What is the default block size of bzip2?",
        ["900k", "900 k", "900,000 bytes", "900,000", "900kbytes"],
    ),
    (
        f"{DOC}/bzip2/manual.html",
        "How much memory does bunzip2 need to decompress a file compressed with the default "
        "block size?",
        ["3700 kbytes", "3700k", "3700"],
    ),
    (
        f"{DOC}/bzip2/manual.html",
        "Which environment variables does bzip2 read default arguments from?",
        ["BZIP2 and BZIP"],
    ),
    (f"{DOC}/bzip2/manual.html", "Who wrote bzip2?", ["Julian Seward"]),
    # Ninja manual (HTML)
    (
        f"{DOC}/ninja-build/manual.html",
        "Which file does ninja look for by default?",
        ["build.ninja"],
    ),
    (
        f"{DOC}/ninja-build/manual.html",
        "Which environment variable controls the progress status Ninja prints?",
        ["NINJA_STATUS"],
    ),
    (
        f"{DOC}/ninja-build/manual.html",
        "Which port does ninja -t browse use by default?",
        ["8000"],
    ),
    (
        f"{DOC}/ninja-build/manual.html",
        "In which file does Ninja keep the log of the commands used to build each file?",
        [".ninja_log"],
    ),
    # GNU time manual (HTML)
    (
        f"{DOC}/time/time.html",
        "Which option makes time append to the output file instead of overwriting it?",
        ["--append", "-a"],
    ),
    (
        f"{DOC}/time/time.html",
        "In what unit does time report the maximum resident set size?",
        ["Kilobytes"],
    ),
    (
        f"{DOC}/time/time.html",
        "Where does time write the resource use statistics by default?",
        ["standard error", "stderr"],
    ),
    (
        f"{DOC}/time/time.html",
        "Where should bug reports for GNU time be sent?",
        ["bug-time@gnu.org"],
    ),
    # The rustdoc book: command-line arguments (HTML)
    (
        f"{RUST}/rustdoc/command-line-arguments.html",
        "Which edition does rustdoc use by default?",
        ["2015"],
    ),
    (
        f"{RUST}/rustdoc/command-line-arguments.html",
        "What is rustdoc's default theme?",
        ["light"],
    ),
    (
        f"{RUST}/rustdoc/command-line-arguments.html",
        "In which directory does rustdoc put its output by default?",
        ["doc"],
    ),
    # The Cargo book: profiles (HTML)
    (
        f"{RUST}/cargo/reference/profiles.html",
        "What opt-level does Cargo's release profile use by default?",
        ["opt-level = 3", "3"],
    ),
    (
        f"{RUST}/cargo/reference/profiles.html",
        "How many codegen units does Cargo use by default for incremental builds?",
        ["256"],
    ),
    # Rust release notes (Markdown changelog)
    (f"{RUST}/releases.md", "When was Rust 1.0.0 released?", ["2015-05-15"]),
    (
        f"{RUST}/releases.md",
        "Which Rust version made the 2024 Edition stable?",
        ["1.85.0", "1.85"],
    ),
    (
        f"{RUST}/releases.md",
        "In which Rust version did the 2021 Edition become stable?",
        ["1.56.0", "1.56"],
    ),
    # Valgrind NEWS (HTML changelog)
    (
        f"{DOC}/valgrind/html/dist.news.html",
        "When was Valgrind 3.19.0 released?",
        ["11 Apr 2022"],
    ),
    (
        f"{DOC}/valgrind/html/dist.news.html",
        "Which Valgrind release added support for X86/FreeBSD and AMD64/FreeBSD?",
        ["3.18.0", "3.18"],
    ),
    (
        f"{DOC}/valgrind/html/dist.news.html",
        'What does "n-i-bz" stand for?',
        ["not in bugzilla"],
    ),
    (
        f"{DOC}/valgrind/html/dist.news.html",
        "How do you run DHAT now that it is a regular tool?",
        ["--tool=dhat"],
    ),
    # Git 2.20 release notes (plain text)
    (
        f"{DOC}/git/RelNotes/2.20.0.txt",
        "What is the minimum version of Windows supported by the Windows port of Git?",
        ["Vista"],
    ),
    (
        f"{DOC}/git/RelNotes/2.20.0.txt",
        'What is "git branch -l <foo>" a short-hand for now?',
        ["git branch --list", "--list"],
    ),
    (
        f"{DOC}/git/RelNotes/2.20.0.txt",
        'Which new instruction can be put in the "git rebase -i" to-do list to return control '
        "to the user?",
        ["break"],
    ),
    # License texts
    (
        f"{LICENSES}/GPL-3",
        "What is the date of version 3 of the GNU General Public License?",
        ["29 June 2007"],
    ),
    (
        f"{LICENSES}/GPL-3",
        "How long must a written offer to give the Corresponding Source be valid?",
        ["three years"],
    ),
    (
        f"{LICENSES}/GPL-3",
        "Within how many days after receiving a notice of violation must you cure it to have "
        "your license reinstated permanently?",
        ["30 days", "30"],
    ),
    (
        f"{LICENSES}/Apache-2.0",
        "When was the Apache License Version 2.0 published?",
        ["January 2004"],
    ),
    (
        f"{LICENSES}/MPL-2.0",
        "Who is the license steward of the Mozilla Public License?",
        ["Mozilla Foundation"],
    ),
    # tqdm README (METADATA of the installed package)
    (
        f"{SITE}/tqdm-4.70.1.dist-info/METADATA",
        "What is tqdm's default mininterval?",
        ["0.1"],
    ),
    (
        f"{SITE}/tqdm-4.70.1.dist-info/METADATA",
        "Where does tqdm write the progress bar by default?",
        ["sys.stderr", "stderr"],
    ),
    (
        f"{SITE}/tqdm-4.70.1.dist-info/METADATA",
        "Under which license is tqdm released?",
        ["MPL-2.0 AND MIT"],
    ),
    # tabulate README (METADATA of the installed package)
    (
        f"{SITE}/tabulate-0.10.0.dist-info/METADATA",
        "What is tabulate's default table format?",
        ["simple"],
    ),
    (
        f"{SITE}/tabulate-0.10.0.dist-info/METADATA",
        "Who is the author of tabulate?",
        ["Sergey Astanin"],
    ),
    # dpkg triggers spec (plain text)
    (
        f"{DOC}/dpkg/spec/triggers.txt",
        "Which program activates a dpkg trigger explicitly?",
        ["dpkg-trigger"],
    ),
    (
        f"{DOC}/dpkg/spec/triggers.txt",
        "How does dpkg run a package's postinst script to process its pending triggers?",
        ["postinst triggered"],
    ),
    (
        f"{DOC}/dpkg/spec/triggers.txt",
        'What state does a package go to when its "postinst triggered" run fails?',
        ["config-failed"],
    ),
    # Debian Python policy (HTML)
    (
        f"{DOC}/python3/python-policy.html",
        "Where must public Python 3 modules be installed on Debian?",
        ["/usr/lib/python3/dist-packages"],
    ),
    (
        f"{DOC}/python3/python-policy.html",
        "What must the binary package name of a public Python 3 module be prefixed with?",
        ["python3-"],
    ),
]


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def holds(text: str, references: list[str]) -> bool:
    """Whether one of ``references`` occurs in ``text`` (case-insensitive, whitespace folded),
    not as part of a longer word or number."""
    folded = _fold(text)
    for ref in references:
        ref = _fold(ref)
        head = r"(?<![^\W_])" if ref[:1].isalnum() else ""
        tail = r"(?![^\W_])" if ref[-1:].isalnum() else ""
        if re.search(head + re.escape(ref) + tail, folded):
            return True
    return False


def _short(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answer", choices=ANSWERS, default=DEFAULT_ANSWER, help="answer mode")
    parser.add_argument("--no-rerank", action="store_true", help="skip the re-ranker")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    by_path: dict[str, list[tuple[str, list[str]]]] = {}
    for path, question, references in CASES:
        by_path.setdefault(path, []).append((question, references))

    reader = build_reader(answer=args.answer, rerank=not args.no_rerank)
    rows: list[dict] = []
    skipped = 0
    for path, questions in by_path.items():
        if not Path(path).is_file():
            print(f"skipped (not on this machine): {path}")
            skipped += len(questions)
            continue
        try:
            doc = load_document(path)
        except DataError as exc:
            print(f"skipped (cannot read): {exc}")
            skipped += len(questions)
            continue
        start = time.perf_counter()
        index = reader.index([doc])
        print(
            f"\n{path} ({len(doc.text):,} characters, indexed in "
            f"{time.perf_counter() - start:.1f}s)"
        )
        for question, references in questions:
            start = time.perf_counter()
            result = reader.answer(question, index)
            seconds = time.perf_counter() - start
            answer = result.answer or ""
            ok = len(answer) <= MAX_ANSWER_CHARS and holds(answer, references)
            in_evidence = any(holds(ev.text, references) for ev in result.evidence[:EVIDENCE_TOP])
            rows.append(
                {
                    "path": path,
                    "question": question,
                    "references": references,
                    "answer": answer,
                    "ok": ok,
                    "evidence": in_evidence,
                    "seconds": round(seconds, 3),
                }
            )
            print(
                f"{'ok' if ok else '--'} {question!r} -> {_short(answer)!r} "
                f"(references {references}; evidence: {'yes' if in_evidence else 'no'})"
            )

    held = sum(row["ok"] for row in rows)
    found = sum(row["evidence"] for row in rows)
    print(f"\n{held} of {len(rows)} answers hold a reference; evidence holds one for {found}")
    if skipped:
        print(f"({skipped} questions skipped: their documents are missing or unreadable)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"rows written to {args.json}")


if __name__ == "__main__":
    main()
