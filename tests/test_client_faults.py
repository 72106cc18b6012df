"""Every reply is data: whatever a server sends back becomes a retried or
recorded EndpointError of that request, through the real HTTP path."""

import json
import threading

import pytest

from azclaw.errors import EndpointError
from azclaw.client import LLMClient
from azclaw.client.llm import MAX_REPLY_BYTES, normalize_endpoint
from azclaw.errors import ConfigError
from fakellm import FAULTS, FakeLLM, Reply, fault, redirect, text
from helpers import CLI_TIMEOUT, fast_clients, orchestrator, team

HI = [{"role": "user", "content": "hi"}]


def quick(url, **kw) -> LLMClient:
    """A client that retries at once (the faults are scripted, not outages)."""
    kw.setdefault("backoff", 0.001)
    kw.setdefault("max_backoff", 0.01)
    return LLMClient(url, **kw)


def finishes(fn, bound: float = CLI_TIMEOUT):
    """Run ``fn`` in a thread; fail (not hang) when it does not end within a
    generous bound. Returns its result or raises its exception. What a test
    checks is the result (cut at the client's timeout, an error naming it):
    the bound only keeps a broken client from hanging the suite."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the test
            out["error"] = exc
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(bound)
    assert not worker.is_alive(), f"still running after {bound} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_a_reply_that_breaks_http_is_retried_and_the_next_one_is_used(fake_llm, name):
    fake = fake_llm(script=[fault(name), text("recovered")])
    completion = quick(fake.url).chat(HI)
    assert completion.text == "recovered"
    assert len(fake.chats) == 2


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_a_reply_that_breaks_http_is_an_endpoint_error_naming_the_url_when_no_retry_is_left(fake_llm, name):
    fake = fake_llm(script=[fault(name)])
    with pytest.raises(EndpointError) as info:
        quick(fake.url, retries=0).chat(HI)
    assert fake.url in str(info.value)


BODIES = {
    "html": "<html><body>502 Bad Gateway</body></html>",
    "nested 10,000 deep": "[" * 10000 + "]" * 10000,
    "nested object": '{"choices": ' + "[" * 10000 + "]" * 10000 + "}",
    "no choices": json.dumps({"object": "chat.completion"}),
    "empty choices": json.dumps({"choices": []}),
    "choices not a list": json.dumps({"choices": {"message": "x"}}),
    "a JSON string": json.dumps("hello"),
    "empty": "",
    "a number with 5000 digits": "9" * 5000,
}


@pytest.mark.parametrize("body", list(BODIES.values()), ids=list(BODIES))
def test_an_unusable_body_is_retried_and_the_next_reply_is_used(fake_llm, body):
    fake = fake_llm(script=[Reply(body=body), text("second reply")])
    assert quick(fake.url).chat(HI).text == "second reply"
    assert len(fake.chats) == 2


def _body(message: dict, **extra) -> str:
    return json.dumps({"choices": [{"message": message, "finish_reason": "stop"}], **extra})


def test_numbers_out_of_range_are_not_token_counts(fake_llm):
    body = ('{"choices": [{"message": {"content": "ok"}}], "usage": {"prompt_tokens": ' + "9" * 400
            + ', "completion_tokens": 1e400, "prompt_tokens_details": {"cached_tokens": -5}}}')
    fake = fake_llm(script=[Reply(body=body)])
    completion = quick(fake.url, retries=0).chat(HI)
    assert completion.text == "ok"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.cached_tokens) \
        == (0, 0, 0)


def test_a_lone_surrogate_becomes_a_replacement_character_and_the_text_encodes_as_utf8(fake_llm):
    body = '{"choices": [{"message": {"content": "a\\ud800b", "tool_calls": [{"id": "c\\udfff", "function": ' \
           '{"name": "recall", "arguments": "{\\"query\\": \\"x\\\\ud800\\"}"}}]}}]}'
    fake = fake_llm(script=[Reply(body=body)])
    completion = quick(fake.url, retries=0).chat(HI)
    assert completion.text == "a\ufffdb"
    [call] = completion.tool_calls
    assert call.arguments == {"query": "x\ufffd"}
    for value in (completion.text, call.id, call.raw_arguments, json.dumps(call.arguments, ensure_ascii=False)):
        value.encode("utf-8")


def test_invalid_utf8_bytes_are_replaced(fake_llm):
    body = b'{"choices": [{"message": {"content": "caf\xe9 \xff\xfe ok"}}]}'
    fake = fake_llm(script=[Reply(body=body)])
    assert quick(fake.url, retries=0).chat(HI).text == "caf\ufffd \ufffd\ufffd ok"


def test_odd_field_types_are_dropped_not_raised(fake_llm):
    body = _body({"content": [{"type": "text", "text": "part one "}, {"text": 5}, "x", {"text": "two"}],
                  "tool_calls": [{"id": ["not", "a", "string"], "function": {"name": 42, "arguments": {"a": 1}}},
                                 "not a call",
                                 {"function": {"name": "deep", "arguments": "[" * 5000 + "]" * 5000}}]},
                 usage={"prompt_tokens": True, "completion_tokens": "12"})
    fake = fake_llm(script=[Reply(body=body)])
    completion = quick(fake.url, retries=0).chat(HI)
    assert completion.text == "part one two"
    first, second, third = completion.tool_calls
    assert (first.id, first.name, first.arguments) == ("call_0", "", {"a": 1})
    assert second.name == "" and second.arguments == {}
    assert third.name == "deep" and third.arguments is None and third.error
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (0, 0)


def test_a_reply_over_the_size_cap_is_an_error_not_read_whole(fake_llm):
    fake = fake_llm(script=[Reply(body=_body({"content": "x" * (MAX_REPLY_BYTES + 10)})), text("never")])
    with pytest.raises(EndpointError) as info:
        quick(fake.url).chat(HI, stream=False)
    assert "larger than 4096 KB" in str(info.value)
    assert len(fake.chats) == 1


def test_a_server_trickling_its_reply_cannot_hold_a_request_past_its_timeout(fake_llm):
    # the whole reply would take over a minute at this pace
    fake = fake_llm(script=[Reply(text="slow " * 20, trickle=0.2)])
    client = quick(fake.url, retries=0, timeout=1.0)
    with pytest.raises(EndpointError) as info:
        finishes(lambda: client.chat(HI, stream=False))
    assert "no complete reply within 1 s" in str(info.value)


def test_a_server_trickling_its_status_line_and_headers_cannot_hold_a_request_either(fake_llm):
    fake = fake_llm(script=[Reply(raw=b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"z" * 400 + b"\r\n\r\n", trickle=0.2)])
    client = quick(fake.url, retries=0, timeout=1.0)
    with pytest.raises(EndpointError) as info:
        finishes(lambda: client.chat(HI))
    assert "no complete reply within 1 s" in str(info.value)


def test_a_redirect_to_another_host_is_refused_and_the_key_never_reaches_it(fake_llm):
    elsewhere = fake_llm()
    other_host = elsewhere.url.replace("127.0.0.1", "localhost")
    for target in (elsewhere.url, other_host):
        fake = fake_llm(script=[redirect(target), text("never")])
        with pytest.raises(EndpointError) as info:
            quick(fake.url, api_key="sk-SECRET-1").chat(HI)
        assert "redirect" in str(info.value) and "refused" in str(info.value)
        assert target.split("/v1")[0] in str(info.value)
        assert len(fake.chats) == 1
    assert elsewhere.requests == []


def test_a_redirect_on_the_same_host_is_followed_with_the_key(fake_llm):
    fake = fake_llm(script=[redirect("/v2/chat/completions", status=307), text("moved")])
    assert quick(fake.url, api_key="sk-SECRET-2").chat(HI).text == "moved"
    first, second = fake.chats
    assert second.path == "/v2/chat/completions"
    assert second.header("Authorization") == "Bearer sk-SECRET-2"
    assert second.messages == HI


def test_a_non_ascii_host_becomes_its_ascii_form_and_a_broken_one_is_a_config_error():
    assert normalize_endpoint("http://bücher.example:8080") == "http://xn--bcher-kva.example:8080/v1/chat/completions"
    for bad in ("http://" + "ü" * 70 + ".example", "http://exa mple.com", "http://a\x00b/"):
        with pytest.raises(ConfigError) as info:
            normalize_endpoint(bad)
        assert "endpoint" in str(info.value)


def test_a_run_through_every_kind_of_broken_reply_loses_no_turn(fake_llm):
    broken = [fault(name) for name in sorted(FAULTS)] + [Reply(body=b) for b in BODIES.values()]
    script = [r for fault_reply in broken for r in (fault_reply, text("after a fault"))]
    fake = fake_llm(script=script)  # every turn meets one broken reply, then a good one
    agents = team(fake.url, "alice", "bob", retries=None)
    orch = orchestrator(agents, client_factory=fast_clients)
    rounds = (len(broken) + 1) // 2
    stats = orch.run(max_rounds=rounds)
    assert stats.errors == 0 and stats.rounds == rounds
    assert [m.text for m in orch.history][:len(broken)] == ["after a fault"] * len(broken)
    assert len(fake.chats) == 2 * len(broken) + (2 * rounds - len(broken))


def test_the_cli_rides_out_broken_replies_and_exits_0(azclaw, workdir):
    script = [fault("bad_status_line"), Reply(body="[" * 10000), fault("cut_body"),
              Reply(body=b'{"choices": [{"message": {"content": "caf\xe9 \\ud800"}}]}')]
    with FakeLLM(script=script) as fake:
        proc = azclaw("run", "--task", "x", "--name", "task", "--endpoint", fake.url, "--agents", "architect", "--max-rounds", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    journal = (workdir / "logs" / "task_journal.jsonl").read_text(encoding="utf-8")
    turns = [json.loads(line) for line in journal.splitlines() if '"turn"' in line]
    assert [t.get("errors") for t in turns if t.get("event") == "turn"] == [[], []]


def test_an_http_proxy_from_the_environment_is_used_as_urllib_did(fake_llm, monkeypatch):
    proxy = fake_llm(script=[text("via the proxy")])
    monkeypatch.setenv("http_proxy", proxy.base)
    monkeypatch.delenv("no_proxy", raising=False)
    assert quick("http://model.invalid:8080/v1", retries=0, api_key="k").chat(HI).text == "via the proxy"
    [request] = proxy.chats
    assert request.path == "http://model.invalid:8080/v1/chat/completions"
    assert request.header("Host") == "model.invalid:8080"


def test_no_proxy_sends_the_request_directly(fake_llm, dead_url, monkeypatch):
    fake = fake_llm(script=[text("direct")])
    monkeypatch.setenv("http_proxy", dead_url.split("/v1")[0])
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert quick(fake.url, retries=0).chat(HI).text == "direct"



PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY",
                   "REQUEST_METHOD")


@pytest.mark.parametrize("env", [
    {},
    {"http_proxy": "http://p:1"},
    {"HTTP_PROXY": "http://P:2"},
    {"http_proxy": "http://p:1", "HTTP_PROXY": "http://P:2"},
    {"http_proxy": "", "HTTP_PROXY": "http://P:2"},  # an empty lower-case name means no proxy
    {"HTTP_PROXY": "http://P:2", "REQUEST_METHOD": "GET"},  # a CGI request may not set the proxy
    {"http_proxy": "http://p:1", "no_proxy": "model.example"},
    {"http_proxy": "http://p:1", "NO_PROXY": ".example"},
    {"http_proxy": "http://p:1", "no_proxy": "other.example,*"},
    {"https_proxy": "http://s:3", "no_proxy": "elsewhere"},
])
def test_the_proxy_is_the_one_urllib_would_use(monkeypatch, env):
    import urllib.request
    from azclaw.client.transport import proxy_for
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for scheme in ("http", "https"):
        expected = urllib.request.getproxies().get(scheme)
        if expected and urllib.request.proxy_bypass("model.example"):
            expected = None
        assert proxy_for(scheme, "model.example") == (expected or None), (scheme, env)


CLOSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nConnection: close\r\n\r\n"


def test_a_body_trickled_after_quick_headers_on_a_closing_connection_is_bounded_too(fake_llm):
    head = CLOSE_HEAD % b"application/json"
    body = b'{"choices": [{"message": {"content": "' + b"z" * 400 + b'"}}]}'
    fake = fake_llm(script=[Reply(raw=head + body, trickle=0.2, trickle_from=len(head))])
    client = quick(fake.url, retries=0, timeout=1.0)
    with pytest.raises(EndpointError) as info:
        finishes(lambda: client.chat(HI))
    assert "no complete reply within 1 s" in str(info.value)


def test_a_stream_on_a_closing_connection_that_stalls_is_retried(fake_llm):
    head = CLOSE_HEAD % b"text/event-stream"
    event = b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n'
    fake = fake_llm(script=[Reply(raw=head + event + event, trickle=30, trickle_from=len(head) + len(event)),
                            text("after the stall")])
    # 2 s of silence is a stall (the scripted one lasts 30); the retry's reply has no such pause
    assert finishes(lambda: quick(fake.url, stall_timeout=2.0).chat(HI)).text == "after the stall"


@pytest.mark.parametrize("location", ["http://127.0.0.1:notaport/x", "http://[::1/x", "ftp://127.0.0.1/x",
                                      "javascript:alert(1)"])
def test_a_redirect_to_an_odd_location_is_an_error_naming_the_url(fake_llm, location):
    fake = fake_llm(script=[redirect(location)])
    with pytest.raises(EndpointError) as info:
        quick(fake.url).chat(HI)
    assert fake.url in str(info.value) and "redirect" in str(info.value)
