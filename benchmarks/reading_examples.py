"""`longmm read`'s default reader (``--answer`` picks another answer mode) on two small
documents like the README's examples: a markdown project note and a two-page lease, nine
questions written for them (none used in training).
Prints each answer and how many hold the reference.

Run from the repository root: python benchmarks/reading_examples.py [--answer qa]
"""

import argparse
import re
import tempfile
from pathlib import Path

from longmm.reading import load_document
from longmm.reading.pipeline import ANSWERS, DEFAULT_ANSWER, build_reader

NOTES = """# Project notes

## Dataset

The dataset has 12,400 labelled images collected from three hospitals in 2023.
Each image was reviewed by two radiologists.

## Model

We fine-tune a ResNet-50 for 40 epochs with a learning rate of 0.001.
"""

LEASE = """Lease Agreement for Flat 4B

1 Parties

This lease is made between Harriet Quill, the landlord, and Tomas Brenner, the tenant.
The agreement was signed by Harriet Quill on 3 March 2025 in Leeds.

2 Repairs

The landlord repairs the heating, the boiler and the roof.
The tenant repairs broken windows caused by the tenant.

3 Termination

Either party may end the lease with two months' written notice.
The monthly rent is 950 pounds, paid on the first day of each month.

4 Pets

No pets are allowed except one cat named Biscuit.
"""

QUESTIONS = [
    ("How big is the dataset?", "12,400"),
    ("Who signed it?", "Harriet Quill"),
    ("Who repairs the heating?", "landlord"),
    ("How many epochs?", "40"),
    ("How much is the monthly rent?", "950"),
    ("What is the cat called?", "Biscuit"),
    ("Who reviewed each image?", "two radiologists"),
    ("What learning rate is used?", "0.001"),
    ("Where was it signed?", "Leeds"),
]


def holds(answer: str, reference: str) -> bool:
    """The reference in the answer, case-insensitive, not inside a longer word or number
    ("40" is not in "12,400")."""
    pattern = r"(?<![\w.,])" + re.escape(reference.lower()) + r"(?![\w]|[.,]\d)"
    return re.search(pattern, answer.lower()) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--answer", default=DEFAULT_ANSWER, choices=ANSWERS, help="as in longmm read"
    )
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "notes.md").write_text(NOTES, encoding="utf-8")
        (Path(tmp) / "lease.txt").write_text(LEASE, encoding="utf-8")
        docs = [load_document(Path(tmp) / name) for name in ("notes.md", "lease.txt")]
    reader = build_reader(answer=opts.answer)
    index = reader.index(docs)
    held = 0
    for question, reference in QUESTIONS:
        answer = reader.answer(question, index).answer
        ok = holds(answer, reference)
        held += ok
        print(f"{'ok ' if ok else '-- '} {question!r} -> {answer!r} (reference {reference!r})")
    print(f"{held} of {len(QUESTIONS)} answers hold the reference")


if __name__ == "__main__":
    main()
