"""Pieces of ``longmm serve`` without a server: the wire format to the inference workers,
the command line derived from ``ServeOptions``, the piecewise token count and the HTML depth
check of ``/read``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from longmm.deploy.runfolder import InputError, Limits
from longmm.deploy.serve.options import ServeOptions, build_parser, options_from_args
from longmm.deploy.serve.read import check_html_depth, count_tokens
from longmm.deploy.serve.worker import PING, ClassifierAPI, decode_items, encode_job


def test_prepared_arrays_cross_the_wire_unchanged() -> None:
    items = {
        "text": np.arange(7, dtype=np.int64),
        "image": np.random.default_rng(0).standard_normal((1, 8, 8)).astype(np.float32),
    }
    job = json.loads(encode_job("m", items))
    assert job["model"] == "m"
    back = decode_items(job["items"])
    for key, array in items.items():
        assert back[key].dtype == array.dtype and back[key].shape == array.shape
        np.testing.assert_array_equal(back[key], array)


def test_a_ping_is_answered_without_a_model() -> None:
    api = ClassifierAPI([], [], max_batch_size=2)
    api.runs = {}
    assert api.decode_request({"ping": True}) is PING
    assert api.predict([PING, PING]) == [{"pong": True}, {"pong": True}]


def test_every_option_is_on_the_command_line_with_its_default() -> None:
    args = build_parser().parse_args(["run"])
    assert options_from_args(args) == ServeOptions()
    args = build_parser().parse_args(
        ["run", "--timeout", "7", "--max-request-mb", "0.5", "--max-text-tokens", "9"]
    )
    options = options_from_args(args)
    assert options.timeout_s == 7.0
    assert options.limits.max_request_bytes == 512 * 1024
    assert options.limits.max_text_tokens == 9
    flags = set(vars(build_parser().parse_args(["run"])))
    names = {f.name for f in dataclasses.fields(ServeOptions)} - {"limits"}
    assert names | {f.name for f in dataclasses.fields(Limits)} <= flags


class Words:
    def token_starts(self, texts: list[str]) -> list[np.ndarray]:
        return [np.array([i for i, w in enumerate(t.split())]) for t in texts]


def test_tokens_are_counted_in_pieces_and_stop_past_the_limit() -> None:
    text = "word " * 500_000
    assert count_tokens(Words(), text, 10**6) == 500_000
    with pytest.raises(InputError) as err:
        count_tokens(Words(), text, 1000)
    assert err.value.status == 413 and err.value.field == "document"


def test_html_depth() -> None:
    check_html_depth(b"<html><body>" + b"<p>text <br> <img src=x>" * 5000 + b"</body></html>")
    with pytest.raises(InputError, match="nested over 1000"):
        check_html_depth(b"<div>" * 1001)
