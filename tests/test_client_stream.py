"""Streamed replies: assembled as llama.cpp, vLLM and Ollama send them, a
stall is a hung request, a server without streaming gets plain requests."""

import logging

import pytest

from azclaw.errors import ContextOverflow, EndpointError
from azclaw.client import LLMClient
from fakellm import Reply, calls, text

HI = [{"role": "user", "content": "hi"}]
TWO_CALLS = [("recall", {"query": "the database schema"}), ("remember", {"text": "SQLite, WAL mode", "title": "db"})]


def quick(url, **kw) -> LLMClient:
    kw.setdefault("backoff", 0.001)
    kw.setdefault("max_backoff", 0.01)
    return LLMClient(url, **kw)


def test_a_request_asks_for_a_stream_with_usage_and_the_pieces_make_the_reply(fake_llm):
    fake = fake_llm(script=[text("The answer is forty-two.", pieces=3)], tokens=(120, 7))
    completion = quick(fake.url, retries=0).chat(HI)
    [request] = fake.chats
    assert request.body["stream"] is True and request.body["stream_options"] == {"include_usage": True}
    assert completion.streamed and completion.text == "The answer is forty-two."
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (120, 7)
    assert completion.finish_reason == "stop" and completion.cut_off == ""


@pytest.mark.parametrize("style", ["vllm", "llama.cpp", "ollama"])
def test_tool_calls_in_pieces_are_assembled_as_each_server_sends_them(fake_llm, style):
    fake = fake_llm(script=[calls(*TWO_CALLS, text="Let me look.", pieces=3)], style=style)
    completion = quick(fake.url, retries=0).chat(HI, tools=[{"type": "function", "function": {"name": "recall"}}])
    assert completion.streamed and completion.text == "Let me look."
    assert [(c.name, c.arguments) for c in completion.tool_calls] == TWO_CALLS
    assert [c.id for c in completion.tool_calls] == ["call_0", "call_1"]
    assert completion.finish_reason == "tool_calls"


def _chunk(delta: dict, finish=None) -> dict:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


STREAMS = {
    # Ollama: calls whole, no index, arguments as an object
    "whole calls without index": [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"tool_calls": [{"id": "a", "function": {"name": "recall", "arguments": {"query": "x"}}},
                               {"id": "b", "function": {"name": "list_files", "arguments": {}}}]}),
        _chunk({}, "tool_calls"), "[DONE]"],
    # every call numbered 0, told apart by its id
    "index 0 for every call": [
        _chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "recall", "arguments": '{"que'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ry": "x"}'}}]}),
        _chunk({"tool_calls": [{"index": 0, "id": "b", "function": {"name": "list_files", "arguments": "{}"}}]}),
        _chunk({}, "tool_calls"), "[DONE]"],
    # fragments without an index continue the call before them
    "unnumbered fragments": [
        _chunk({"tool_calls": [{"id": "a", "function": {"name": "recall", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"function": {"arguments": '{"query": '}}]}),
        _chunk({"tool_calls": [{"function": {"arguments": '"x"}'}}]}),
        _chunk({"tool_calls": [{"id": "b", "function": {"name": "list_files"}}]}),
        _chunk({}, "tool_calls"), "[DONE]"],
}


@pytest.mark.parametrize("events", list(STREAMS.values()), ids=list(STREAMS))
def test_other_ways_of_sending_calls_in_a_stream_give_the_same_calls(fake_llm, events):
    fake = fake_llm(script=[Reply(events=events)])
    completion = quick(fake.url, retries=0).chat(HI)
    assert [(c.id, c.name, c.arguments) for c in completion.tool_calls] == [("a", "recall", {"query": "x"}),
                                                                            ("b", "list_files", {})]


def test_reasoning_then_nothing_is_flagged_as_thinking_only(fake_llm):
    events = [_chunk({"reasoning_content": "Let me think"}), _chunk({"reasoning_content": " more"}),
              _chunk({}, "length"), "[DONE]"]
    fake = fake_llm(script=[Reply(events=events)])
    completion = quick(fake.url, retries=0).chat(HI, max_tokens=256)
    assert completion.empty and completion.thinking_only and completion.cut_off == "length"
    assert completion.problem(256) == "reply cut off at max_tokens 256 (inside <think>, nothing left)"


@pytest.mark.parametrize("style, cached", [("llama.cpp", 300), ("vllm", 250)])
def test_cached_prompt_tokens_are_read_from_usage_details_or_llama_cpp_timings(fake_llm, style, cached):
    fake = fake_llm(script=[text("a", cached=cached), text("b", cached=cached)], style=style, tokens=(400, 3))
    client = quick(fake.url, retries=0)
    streamed = client.chat(HI)
    plain = client.chat(HI, stream=False)
    assert streamed.streamed and not plain.streamed
    assert streamed.usage.cached_tokens == plain.usage.cached_tokens == cached
    assert streamed.usage.prompt_tokens == plain.usage.prompt_tokens == 400


def test_progress_is_reported_while_the_reply_streams(fake_llm):
    fake = fake_llm(script=[calls(("recall", {"query": "q" * 40}), text="thinking aloud " * 5, pieces=1,
                                  pause=0.005)])
    seen = []
    completion = quick(fake.url, retries=0).chat(HI, on_delta=lambda p: seen.append((p.tokens, p.text, p.tool)))
    assert len(seen) >= 2
    tokens = [t for t, _, _ in seen]
    assert tokens == sorted(tokens) and tokens[-1] > 70
    assert seen[-1][1] == "thinking aloud " * 5 and seen[-1][2] == "recall"
    assert completion.tool_calls[0].arguments == {"query": "q" * 40}


def test_a_broken_progress_callback_does_not_fail_the_request(fake_llm, caplog):
    fake = fake_llm(script=[text("fine")])

    def broken(progress):
        raise RuntimeError("console bug")
    with caplog.at_level(logging.WARNING, logger="azclaw"):
        assert quick(fake.url, retries=0).chat(HI, on_delta=broken).text == "fine"
    assert "progress callback failed" in caplog.text and "console bug" in caplog.text


def test_a_stream_that_stalls_is_a_hung_request_and_is_retried(fake_llm, caplog):
    fake = fake_llm(script=[text("never finished " * 10, stall_after=3), text("second try")])
    with caplog.at_level(logging.WARNING, logger="azclaw"):
        # 2 s: the second stream must not pause that long, even on a busy machine
        completion = quick(fake.url, stall_timeout=2.0).chat(HI)
    assert completion.text == "second try" and completion.attempts == 2
    assert len(fake.chats) == 2
    assert "stopped for 2 s (a hung request)" in caplog.text


def test_a_slow_stream_that_keeps_sending_is_never_taken_for_a_hung_one(fake_llm):
    # 100 pieces, 0.05 s apart: 5 s in all, over twice the stall timeout, never silent near that long
    # (40 times the pause: a busy machine delays a piece, not by seconds)
    fake = fake_llm(script=[text("x" * 100, pieces=1, pause=0.05)])
    completion = quick(fake.url, retries=0, stall_timeout=2.0).chat(HI)
    assert completion.text == "x" * 100 and completion.attempts == 1


def test_a_stream_cut_before_its_end_is_retried(fake_llm):
    fake = fake_llm(script=[text("half a reply " * 5, stall_after=4, stall=0), text("whole reply")])
    completion = quick(fake.url).chat(HI)
    assert completion.text == "whole reply"
    assert len(fake.chats) == 2


def test_a_stream_that_runs_out_of_time_keeps_what_arrived_and_says_it_was_cut_off(fake_llm):
    # 10 s of pieces against a 2 s timeout: the first pieces arrive within it even on a busy machine
    fake = fake_llm(script=[text("abcdefghijklmnopqrstuvwxyz" * 8, pieces=1, pause=0.05)])
    completion = quick(fake.url, retries=0, timeout=2.0).chat(HI)
    assert completion.cut_off == "timeout" and completion.text
    assert ("abcdefghijklmnopqrstuvwxyz" * 8).startswith(completion.text)
    assert "time ran out" in completion.problem()
    assert len(fake.chats) == 1


def test_a_context_error_in_the_middle_of_a_stream_is_a_context_overflow(fake_llm):
    events = [_chunk({"content": "a"}),
              {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                         "type": "exceed_context_size_error", "n_ctx": 2048}}]
    fake = fake_llm(script=[Reply(events=events), text("never")])
    with pytest.raises(ContextOverflow) as info:
        quick(fake.url).chat(HI)
    assert info.value.limit == 2048
    assert len(fake.chats) == 1


def test_another_error_in_a_stream_is_retried(fake_llm):
    events = [_chunk({"content": "a"}), {"error": {"code": 500, "message": "slot crashed"}}]
    fake = fake_llm(script=[Reply(events=events), text("recovered")])
    assert quick(fake.url).chat(HI).text == "recovered"


def test_a_server_that_ignores_the_stream_flag_gets_plain_requests_from_then_on(fake_llm):
    fake = fake_llm(script=[text("one"), text("two")], stream="no")
    client = quick(fake.url, retries=0)
    first, second = client.chat(HI), client.chat(HI)
    assert (first.text, second.text) == ("one", "two") and not first.streamed
    assert [r.streamed for r in fake.chats] == [True, False]


def test_a_server_that_refuses_streaming_is_asked_again_plainly_and_remembered(fake_llm, caplog):
    fake = fake_llm(script=[text("one"), text("two")], stream="reject")
    client = quick(fake.url, retries=0)
    with caplog.at_level(logging.INFO, logger="azclaw"):
        assert client.chat(HI).text == "one"
        assert client.chat(HI).text == "two"
    assert [r.streamed for r in fake.chats] == [True, False, False]
    assert caplog.text.count("refused a streamed request") == 1


def test_streaming_can_be_turned_off(fake_llm):
    fake = fake_llm(script=[text("plain")])
    assert quick(fake.url, retries=0, stream=False).chat(HI).text == "plain"
    assert "stream" not in fake.chats[0].body


def test_a_streamed_reply_past_the_size_cap_is_cut_off_not_kept_whole(fake_llm):
    from azclaw.client.llm import MAX_REPLY_BYTES
    piece = "y" * 65536
    events = [_chunk({"content": piece}) for _ in range(MAX_REPLY_BYTES // len(piece) + 8)] + [_chunk({}, "stop")]
    fake = fake_llm(script=[Reply(events=events + ["[DONE]"])])
    completion = quick(fake.url, retries=0).chat(HI)
    assert completion.cut_off == "size" and len(completion.text) <= MAX_REPLY_BYTES


def test_an_endless_sse_line_is_an_error_not_a_memory_hog(fake_llm):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    fake = fake_llm(script=[Reply(raw=head + b"data: " + b"z" * (5 * 1024 * 1024)), text("next")])
    assert quick(fake.url).chat(HI).text == "next"


def test_a_stream_of_bare_carriage_returns_is_read_in_linear_time(fake_llm):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    fake = fake_llm(script=[Reply(raw=head + b"\r" * (3 * 1024 * 1024)), text("next")])
    assert quick(fake.url).chat(HI).text == "next"


def test_a_stream_without_its_content_type_is_still_read(fake_llm):
    body = 'data: {"choices": [{"delta": {"content": "hi there"}}]}\n\ndata: [DONE]\n\n'
    fake = fake_llm(script=[Reply(body=body)])
    assert quick(fake.url, retries=0).chat(HI).text == "hi there"


def test_the_stall_timeout_must_be_positive():
    with pytest.raises(Exception) as info:
        LLMClient("http://127.0.0.1:9", stall_timeout=0)
    assert "stall_timeout" in str(info.value)
    assert not isinstance(info.value, EndpointError)


def test_a_stream_without_token_counts_gets_estimated_ones_flagged_as_such(fake_llm):
    fake = fake_llm(script=[text("twelve chars", usage=False, pieces=3), text("counted", usage=True)])
    client = quick(fake.url, retries=0)
    estimated, counted = client.chat(HI), client.chat(HI)
    assert estimated.usage.estimated and estimated.usage.completion_tokens == 4
    assert estimated.usage.prompt_tokens > 0
    assert not counted.usage.estimated


from properties import given, settings, st  # noqa: E402  (hypothesis, or a skip without it)

from azclaw.client.sse import events as sse_events  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
                        min_size=1, max_size=30), min_size=1, max_size=8),
       st.sampled_from(["\n", "\r\n", "\r"]), st.lists(st.integers(1, 40), max_size=20))
def test_sse_events_are_the_same_however_the_bytes_are_split(datas, newline, cuts):
    stream = "".join(f": comment{newline}data: {d}{newline}{newline}" for d in datas).encode()
    chunks, pos = [], 0
    for n in cuts:
        chunks.append(stream[pos:pos + n])
        pos += n
    chunks.append(stream[pos:])
    assert list(sse_events(chunks)) == datas


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                         st.sampled_from(["choices", "delta", "content", "tool_calls", "index", "id", "function",
                                          "name", "arguments", "usage", "finish_reason", "message", "x"]),
                         inner, max_size=4), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.lists(_json, max_size=6))
def test_any_stream_of_json_events_assembles_or_is_a_stream_error(chunks):
    from azclaw.client.completion import parse_completion
    from azclaw.errors import EndpointError
    from azclaw.client.sse import Assembler, StreamError, assemble
    import json as _j
    stream = "".join(f"data: {_j.dumps(c)}\n\n" for c in chunks).encode()
    try:
        body = assemble([stream], Assembler()).body()
    except StreamError:
        return
    try:
        parse_completion(body)
    except EndpointError:
        pass
