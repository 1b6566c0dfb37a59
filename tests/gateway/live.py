"""A live uvicorn server for the tests: an app on an ephemeral 127.0.0.1 port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Self

import uvicorn


class LiveServer:
    """uvicorn serving ``app`` on an ephemeral 127.0.0.1 port, in a thread, as a context manager.

    Parameters
    ----------
    app : Any
        The ASGI app.
    scheme : str
        Of :attr:`url`: ``"https"`` when ``config`` carries a certificate.
    timeout_s : float
        How long starting (and stopping) may take [s].
    what : str
        The server's name in the error when it does not start.
    **config : Any
        More :class:`uvicorn.Config` options (default ``log_level="warning"``, ``ws="none"``).
    """

    def __init__(
        self,
        app: Any,
        *,
        scheme: str = "http",
        timeout_s: float = 20.0,
        what: str = "the test server",
        **config: Any,
    ) -> None:
        options: dict[str, Any] = {"log_level": "warning", "ws": "none", **config}
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.timeout_s = timeout_s
        self.what = what
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + self.timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"{self.what} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.timeout_s)
        self.sock.close()
