"""Connections that never become a request are closed.

uvicorn closes a kept-alive connection that stays idle after an answer (``timeout_keep_alive``)
but not one that connects and then sends nothing, or half a request head: a crowd of those
holds the server's open files for ever (measured: 1,100 of them under a limit of 1,024 open
files stopped the server). :func:`protocol_class` gives uvicorn's own HTTP protocol (the one
``http="auto"`` picks), passed to uvicorn through its documented ``http`` option, extended
only through the ``asyncio.Protocol`` interface (``connection_made``, ``data_received``,
``connection_lost``, each calling uvicorn's own): a connection must deliver a complete request
head (up to the blank line) within ``head_timeout_s`` of connecting, or it is closed.

Left to uvicorn: a second request on a kept-alive connection, sent by halves (its head is not
watched here: telling a head from a body there would mean parsing HTTP again).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

HEAD_END = b"\r\n\r\n"


class HeadDeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    head_timeout_s = 10.0

    def connection_made(self, transport: Any) -> None:
        self.longmm_head_seen = False
        self.longmm_tail = b""
        loop = asyncio.get_running_loop()
        self.longmm_timer = loop.call_later(self.head_timeout_s, self.longmm_deadline, transport)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.longmm_head_seen:
            if HEAD_END in self.longmm_tail + data:
                self.longmm_head_seen = True
                self.longmm_timer.cancel()
            else:
                self.longmm_tail = (self.longmm_tail + data)[-3:]
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.longmm_timer.cancel()
        super().connection_lost(exc)

    def longmm_deadline(self, transport: Any) -> None:
        if not self.longmm_head_seen and not transport.is_closing():
            transport.close()


def protocol_class(head_timeout_s: float) -> type:
    """uvicorn's HTTP protocol with a deadline of ``head_timeout_s`` on the first head."""
    return type("LongmmHTTPProtocol", (HeadDeadlineProtocol,), {"head_timeout_s": head_timeout_s})
