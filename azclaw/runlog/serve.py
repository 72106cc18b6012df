"""``azclaw report --serve``: the report as a live page on 127.0.0.1.

The page is rendered again only when someone asks for it and the journal
changed (its size, modification time or file) or the run's process ended.
A small script in the page asks ``/version`` every few seconds; when it
changed, it fetches the page and replaces only the parts and rounds that
differ, so the reader keeps their scroll position and the rounds they
opened or closed. Standard library only: ``http.server``.
"""

from __future__ import annotations

import hashlib
import html
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import AzclawError, ConfigError
from .reader import RunLog, find_journal
from .common import PAGE_CSS, alive, chart_engine
from .report import render_html
from .status import RunStatus, status_of

HOST = "127.0.0.1"
POLL_MS = 2000


class ReportServer:
    """Serves the report of the newest run in ``log_dir`` at ``url``."""

    def __init__(self, log_dir: str | Path, charts: str = "auto", port: int = 0):
        self.log_dir = Path(log_dir)
        if not self.log_dir.exists():
            raise ConfigError(f"{self.log_dir}: no such folder (give the run's --log-dir)")
        self.engine = chart_engine(charts)
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._page = b""
        self._status: RunStatus | None = None
        self.renders = 0
        try:
            self.httpd = ThreadingHTTPServer((HOST, port), _handler(self))
        except OSError as exc:
            raise ConfigError(f"{HOST}:{port}: cannot serve the report there ({exc.strerror or exc})") from None
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        self.httpd.server_close()

    def refuses(self, host: str | None, origin: str | None) -> int:
        """0 for a request addressed to this server by a name of the loopback
        (127.0.0.1 or localhost, with its port); else the status to refuse it
        with: 421 for another Host, 403 for another Origin (the rule of
        ``azclaw mcp --http``)."""
        port = self.httpd.server_address[1]
        names = [f"{h}:{port}" for h in (HOST, "localhost")] + ([HOST, "localhost"] if port == 80 else [])
        if (host or "").strip().lower() not in names:
            return 421
        if origin is not None and origin.strip().lower() not in [f"http://{n}" for n in names]:
            return 403
        return 0

    def version(self) -> str:
        """Changes whenever the page would: cheap (a ``stat``), no rendering."""
        return _digest(repr(self._key_now()))

    def page(self) -> bytes:
        with self._lock:
            key = self._key_now()
            if key != self._key or not self._page:
                self._page = self._render(key).encode("utf-8")
                self._key = key
                self.renders += 1
            return self._page

    def _key_now(self) -> tuple:
        try:
            path = find_journal(self.log_dir)
            st = path.stat()
        except (AzclawError, OSError):
            return ("no journal",)
        running = None
        if self._status is not None and self._status.running:  # a killed run changes no file
            running = alive(self._status.pid, self._status.host, None)
        return (str(path), st.st_ino, st.st_size, st.st_mtime_ns, running)

    def _render(self, key: tuple) -> str:
        script = live_script(_digest(repr(key)))
        if key == ("no journal",):
            return notice_page("Waiting for a run", f"No run journal in {self.log_dir} yet. This page shows the "
                                                    "run as soon as one starts.", script)
        try:
            run = RunLog.read(key[0])
            self._status = status_of(run)
            return render_html(self._status, run, self.engine, script)
        except AzclawError as exc:
            return notice_page("No report yet", str(exc), script)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _handler(server: ReportServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            refused = server.refuses(self.headers.get("Host"), self.headers.get("Origin"))
            if refused:  # a page of another site, pointed here by DNS rebinding, must not read the run
                self._send(refused, "text/plain; charset=utf-8",
                           f"azclaw: the report answers at {server.url} only\n".encode())
                return
            route = self.path.split("?", 1)[0]
            try:
                if route in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", server.page())
                elif route == "/version":
                    self._send(200, "text/plain; charset=utf-8", server.version().encode("ascii"))
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: the report is at /\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser went away
            except Exception as exc:  # a bad journal must not take the server down
                self._send(500, "text/plain; charset=utf-8", f"azclaw: cannot render the report: {exc}\n".encode())

        def _send(self, status: int, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

    return Handler


def notice_page(title: str, text: str, script: str = "") -> str:
    """A page with one message (no run yet, or a journal that cannot be read)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>azclaw report: {html.escape(title)}'
            f'</title><style>{PAGE_CSS}</style></head><body><header id="head" data-part data-v="">'
            f'<h1>{html.escape(title)}</h1><p class="sub">{html.escape(text)}</p></header>{script}</body></html>\n')


def live_script(version: str) -> str:
    """What makes the report live: the badge, the poll, the partial update."""
    return (f'<div id="live" data-version="{version}">live</div>\n<style>{_LIVE_CSS}</style>\n'
            f"<script>{_LIVE_JS.replace('POLL_MS', str(POLL_MS))}</script>")


_LIVE_CSS = """
#live { position: fixed; top: 8px; right: 8px; font-size: 12px; padding: 3px 8px; border-radius: 10px;
        background: #e6f4ea; color: #1a7f37; border: 1px solid #b7dfc3; }
#live.down { background: #fdecea; color: #cf222e; border-color: #f5c2c0; }
"""

# Parts (data-part) whose digest (data-v) changed are replaced; rounds of the
# transcript are merged one by one. A <details> the reader opened or closed
# keeps that state; the others take the state the new page gives them.
_LIVE_JS = r"""
(function () {
  "use strict";
  var userSet = {}, updates = 0;
  var badge = function () { return document.getElementById("live"); };
  var version = badge().getAttribute("data-version");
  document.addEventListener("click", function (e) {
    var summary = e.target.closest ? e.target.closest("summary") : null;
    var d = summary && summary.parentElement;
    if (d && d.tagName === "DETAILS" && d.id) userSet[d.id] = !d.open;  // before the toggle happens
  }, true);
  function list(nodes) { return Array.prototype.slice.call(nodes); }
  function settle(root) {
    list(root.querySelectorAll("details[id]")).concat(root.tagName === "DETAILS" ? [root] : []).forEach(function (d) {
      if (Object.prototype.hasOwnProperty.call(userSet, d.id)) d.open = userSet[d.id];
    });
    return root;
  }
  function mergeRounds(cur, fresh) {
    var want = list(fresh.children), keep = {}, prev = null;
    var isRound = function (n) { return n.matches("details.round"); };
    if (!want.length || !want.every(isRound) || !list(cur.children).every(isRound)) {
      cur.replaceWith(settle(fresh));
      return;
    }
    want.forEach(function (r) {
      keep[r.id] = true;
      var old = document.getElementById(r.id);
      if (old && old.getAttribute("data-v") === r.getAttribute("data-v")) {
        if (!Object.prototype.hasOwnProperty.call(userSet, r.id)) old.open = r.hasAttribute("open");
        prev = old;
        return;
      }
      settle(r);
      if (old) old.replaceWith(r); else if (prev) prev.after(r); else cur.prepend(r);
      prev = r;
    });
    list(cur.children).forEach(function (r) { if (!keep[r.id]) r.remove(); });
  }
  function apply(doc) {
    var root = document.documentElement;
    var atEnd = window.innerHeight + window.scrollY >= root.scrollHeight - 60;
    var fresh = list(doc.querySelectorAll("[data-part]"));
    var same = fresh.length === document.querySelectorAll("[data-part]").length &&
               fresh.every(function (p) { return document.getElementById(p.id); });
    if (!same) {  // another kind of page (the run started): all its parts
      list(document.querySelectorAll("[data-part]")).forEach(function (p) { p.remove(); });
      fresh.forEach(function (p) { document.body.insertBefore(settle(p), badge()); });
    } else {
      fresh.forEach(function (p) {
        var old = document.getElementById(p.id);
        if (old.getAttribute("data-v") === p.getAttribute("data-v")) return;
        var rounds = p.querySelector("#rounds"), oldRounds = old.querySelector("#rounds");
        if (rounds && oldRounds) {
          mergeRounds(oldRounds, rounds);
          old.setAttribute("data-v", p.getAttribute("data-v"));
        } else {
          old.replaceWith(settle(p));
        }
      });
    }
    document.title = doc.title;
    if (atEnd) window.scrollTo(0, root.scrollHeight);  // a reader at the end follows the run
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function short(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
    return Math.floor(s / 3600) + "h" + pad(Math.floor(s / 60) % 60) + "m";
  }
  function long(s) {
    s = Math.max(0, Math.floor(s));
    return Math.floor(s / 3600) + ":" + pad(Math.floor(s / 60) % 60) + ":" + pad(s % 60);
  }
  function clock() { return new Date().toLocaleTimeString(); }
  function tick() {
    var now = Date.now();
    list(document.querySelectorAll("[data-since]")).forEach(function (el) {
      var t = Date.parse(el.getAttribute("data-since"));
      if (!isNaN(t)) el.textContent = short((now - t) / 1000);
    });
    list(document.querySelectorAll("[data-elapsed]")).forEach(function (el) {
      var t = Date.parse(el.getAttribute("data-at"));
      if (!isNaN(t)) el.textContent = long(parseFloat(el.getAttribute("data-elapsed")) + (now - t) / 1000);
    });
  }
  function say(text, down) {
    var el = badge();
    el.textContent = text;
    el.className = down ? "down" : "";
  }
  function poll() {
    fetch("/version", {cache: "no-store"}).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    }).then(function (v) {
      if (v.trim() === version) { say("live \u00b7 checked " + clock()); return; }
      return fetch("/", {cache: "no-store"}).then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      }).then(function (page) {
        var doc = new DOMParser().parseFromString(page, "text/html");
        var fresher = doc.getElementById("live");
        apply(doc);
        version = fresher ? fresher.getAttribute("data-version") : v.trim();
        badge().setAttribute("data-version", version);
        updates += 1;
        document.documentElement.setAttribute("data-updates", String(updates));
        say("live \u00b7 updated " + clock());
      });
    }).catch(function () {
      say("not live: the server does not answer (stopped?) \u00b7 " + clock(), true);
    }).then(function () {
      tick();
      setTimeout(poll, POLL_MS);
    });
  }
  tick();
  setInterval(tick, 1000);
  setTimeout(poll, POLL_MS);
})();
"""
