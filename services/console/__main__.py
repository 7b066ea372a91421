"""`python -m services.console` (or `bulwark-console`): the operator console at http://<host>:<port>/."""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from bulwark.doctor import DoctorSettings
from bulwark.guard.settings import GuardSettings
from bulwark.runtime import ServiceRuntime, main_guard
from bulwark.settings import CommonSettings, load_settings
from services.console.app import build_app
from services.console.settings import ConsoleSettings
from services.console.sources import ConsoleSources

SERVICE = "console"
log = logging.getLogger("services.console")


class HttpServer:
    """uvicorn on a socket bound up front (so port 0 is known at once), in a thread, with the start/stop shape
    `ServiceRuntime.run(server=...)` expects of a gRPC server."""

    def __init__(self, app: object, host: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        # The runtime owns SIGTERM: uvicorn must not install its own handlers (it runs in a thread anyway).
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]}, name="http",
                                        daemon=True)

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self, grace: float = 5.0) -> threading.Event:
        """Stop accepting, let requests in flight finish for up to `grace` seconds; the event is set when done."""
        done = threading.Event()
        self._server.should_exit = True

        def _wait() -> None:
            self._thread.join(timeout=grace + 1)
            self.sock.close()
            done.set()

        threading.Thread(target=_wait, daemon=True).start()
        return done


@main_guard
def main() -> None:
    """Serve the console until SIGTERM."""
    settings = load_settings(CommonSettings)
    own = load_settings(ConsoleSettings)
    rt = ServiceRuntime(SERVICE, settings)
    sources = ConsoleSources(settings, own, doctor=load_settings(DoctorSettings), guard=load_settings(GuardSettings))
    server = HttpServer(build_app(sources), own.host, own.port)
    rt.stats.extra["http_port"] = str(server.port)
    log.info("console url=http://%s:%s/", own.host, server.port)
    rt.run(server=server)


if __name__ == "__main__":
    main()
