"""Serve the HTML reports folder read-only on localhost, so the report links in asset metadata open
from the Dagster UI (a browser does not follow file:// links from an http:// page).

    python -m retrain_assets.apps.reports_server [--dir data/reports] [--port 3030]
"""

from __future__ import annotations

import argparse
import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from retrain_assets.settings import ProjectSettings


class _ReportHandler(SimpleHTTPRequestHandler):
    """Static files only: GET and HEAD, no writes; quiet unless something fails."""

    def log_request(self, code="-", size="-") -> None:
        if str(getattr(code, "value", code)).startswith(("4", "5")):
            super().log_request(code, size)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # a re-run rewrites the report under the same name
        super().end_headers()


def bind_address(url: str, default_port: int) -> tuple[str, int]:
    """The host and port a local server for `url` binds (127.0.0.1 and `default_port` when unsaid)."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def make_server(directory: Path, host: str = "127.0.0.1", port: int = 3030) -> ThreadingHTTPServer:
    """A server for `directory` (created if missing); port 0 picks a free one."""
    directory.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_ReportHandler, directory=str(directory))
    return ThreadingHTTPServer((host, port), handler)


def main(argv: list[str] | None = None) -> int:
    settings = ProjectSettings.from_env()
    host, port = bind_address(settings.reports_url, 3030)
    parser = argparse.ArgumentParser(prog="python -m retrain_assets.apps.reports_server", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=settings.reports_root, help="folder to serve, every dataset's reports below it (default: %(default)s)")
    parser.add_argument("--host", default=host, help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=port, help="port (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        server = make_server(args.dir, args.host, args.port)
    except OSError as error:
        print(f"cannot serve the reports on {args.host}:{args.port}: {error.strerror}. Pick another port with --port "
              "and set RETRAIN_ASSETS_REPORTS_URL to match, so the links in the UI point at it.", file=sys.stderr)
        return 2
    print(f"serving {args.dir} at http://{args.host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
