"""``longmm data list | inspect PATH``: embedded sets and source formats, or a dataset's counts,
shapes and problems (``longmm.data.inspect``)."""

from __future__ import annotations

import argparse
import json

from longmm.data.inspect import inspect_data, list_sets, print_report


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="longmm data", description="Embedded sets and dataset checks."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="embedded sets and source formats")
    ins = sub.add_parser(
        "inspect", help="counts per split and class, sample shapes, problems found"
    )
    ins.add_argument("path", help="a folder or file, or an embedded set's name")
    ins.add_argument("--format", default="auto")
    ins.add_argument("--text-column", default=None)
    ins.add_argument("--label-column", default=None)
    ins.add_argument("--src-lang", default="en")
    ins.add_argument("--tgt-lang", default="de")
    ins.add_argument("--json", action="store_true", help="print JSON instead of text")
    opts = parser.parse_args(args)
    if opts.action == "list":
        print(list_sets())
        return
    report = inspect_data(
        opts.path,
        opts.format,
        text_column=opts.text_column,
        label_column=opts.label_column,
        src_lang=opts.src_lang,
        tgt_lang=opts.tgt_lang,
    )
    if opts.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
