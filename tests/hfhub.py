"""A stand-in Hugging Face Hub on 127.0.0.1, for ``--model hf:...`` without
the network: point ``HF_ENDPOINT`` at ``hub.url``.

It answers what ``huggingface_hub.hf_hub_download`` asks (read from its
source, version 2.4), as the real Hub does for a file stored with LFS:

* ``HEAD /{repo}/resolve/{revision}/{filename}``: ``302`` to the file's
  blob on another origin (the "CDN", here a second server on another port),
  with ``X-Repo-Commit`` (the commit the revision points to),
  ``X-Linked-Etag`` (the file's sha256, quoted) and ``X-Linked-Size``. A
  redirect to another origin is not followed: the metadata is read from it.
* ``GET`` of the blob's URL: the bytes, with ``Content-Length`` and ``ETag``.
* A file the repository does not have: ``404`` with ``X-Error-Code:
  EntryNotFound`` and the commit; a repository it does not know: ``401``
  with ``X-Error-Code: RepoNotFound`` (the Hub says 401 rather than reveal
  whether a private repository exists); a gated one (``gated``): ``401``
  with ``X-Error-Code: GatedRepo``.

Every request is recorded (method and path), on the hub and on the CDN.
"""

from __future__ import annotations

import hashlib
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

from relay import Quiet

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFile:
    path: Path
    sha256: str
    size: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that hangs up is not an error here
        pass


class StandInHub:
    """``StandInHub({"owner/repo/FILE.gguf": Path})``; a context manager."""

    def __init__(self, files: dict[str, Path], gated: tuple[str, ...] = ()):
        self.gated = set(gated)  # repositories whose terms an account must accept first
        self.files: dict[tuple[str, str], HubFile] = {}
        for name, path in files.items():
            owner, repo, filename = name.split("/", 2)
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            self.files[(f"{owner}/{repo}", filename)] = HubFile(Path(path), digest, Path(path).stat().st_size)
        self.requests: list[tuple[str, str]] = []  # (method, path) at the hub
        self.cdn_requests: list[tuple[str, str]] = []  # (method, path) at the CDN
        self.lock = threading.Lock()
        self.hub = _Server(("127.0.0.1", 0), self._hub_handler())
        self.cdn = _Server(("127.0.0.1", 0), self._cdn_handler())
        self.threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
                        for s in (self.hub, self.cdn)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self.cdn.server_address[1]}"

    @property
    def downloads(self) -> list[str]:
        """The blobs sent whole (GET at the CDN)."""
        return [path for method, path in self.cdn_requests if method == "GET"]

    def start(self) -> "StandInHub":
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "StandInHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _by_sha(self, sha: str) -> HubFile | None:
        return next((f for f in self.files.values() if f.sha256 == sha), None)

    def _hub_handler(self):
        hub = self

        class Handler(Quiet):
            def do_HEAD(self):
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                with hub.lock:
                    hub.requests.append((self.command, path))
                parts = path.lstrip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self.answer(404, {"Content-Type": "application/json"}, b'{"error": "Not Found"}')
                repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
                if repo in hub.gated:
                    return self.answer(401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model "
                                              f"{repo} is restricted.", "Content-Type": "application/json"},
                                        b'{"error": "gated"}')
                if not any(r == repo for r, _ in hub.files):
                    return self.answer(401, {"X-Error-Code": "RepoNotFound", "X-Error-Message":
                                              "Invalid username or password.", "Content-Type": "application/json"},
                                        b'{"error": "Repository not found"}')
                found = hub.files.get((repo, filename))
                if found is None:
                    return self.answer(404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                                              "X-Repo-Commit": COMMIT, "Content-Type": "application/json"},
                                        b'{"error": "Entry not found"}')
                # an LFS file: a redirect to its blob elsewhere, the metadata on the redirect
                self.answer(302, {"Location": f"{hub.cdn_url}/blobs/{found.sha256}?download=true",
                                   "X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{found.sha256}"',
                                   "X-Linked-Size": found.size, "ETag": '"0a1b2c3d"', "Accept-Ranges": "bytes"})

            do_GET = do_HEAD

        return Handler

    def _cdn_handler(self):
        hub = self

        class Handler(Quiet):
            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                with hub.lock:
                    hub.cdn_requests.append((self.command, path))
                found = hub._by_sha(path.rsplit("/", 1)[-1])
                if found is None:
                    return self.answer(404, {})
                self.answer(200, {"Content-Type": "application/octet-stream", "ETag": f'"{found.sha256}"'},
                            found.path.read_bytes())

            do_HEAD = do_GET

        return Handler
