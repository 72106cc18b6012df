"""Tool calls written as text: parsed only inside the accepted shapes."""

import json

import pytest
from properties import given, settings, st  # hypothesis, or a skip without it

from azclaw.client.llm import parse_completion
from azclaw.client.textcalls import parse_text_calls, strip_thinking


@pytest.mark.parametrize("reply, name, args, rest", [
    ('<tool_call>{"name": "recall", "arguments": {"query": "db"}}</tool_call>', "recall", {"query": "db"}, ""),
    ('Let me check.\n<tool_call>\n{"name": "recall", "arguments": {"query": "db"}}\n</tool_call>',
     "recall", {"query": "db"}, "Let me check."),
    ('<tool_call>{"name": "remember", "arguments": {"text": "x", "title": "t"}}', "remember",
     {"text": "x", "title": "t"}, ""),
    ('{"name": "list_files", "arguments": {}}', "list_files", {}, ""),
    ('```json\n{"name": "read_file", "parameters": {"path": "a.py"}}\n```', "read_file", {"path": "a.py"}, ""),
    ('<tool_call>{"name": "recall", "arguments": "{\\"query\\": \\"x\\"}"}</tool_call>', "recall",
     '{"query": "x"}', ""),
])
def test_text_calls_in_accepted_shapes_are_found(reply, name, args, rest):
    calls, remaining = parse_text_calls(reply)
    assert [(c.name, c.arguments) for c in calls] == [(name, args)]
    assert remaining == rest


@pytest.mark.parametrize("reply", [
    'The config is {"name": "db", "arguments": {"x": 1}} as shown.',
    '{"name": "recall"}',
    '{"title": "x", "arguments": {}}',
    "<tool_call>not json</tool_call>",
    "<tool_call>[1, 2]</tool_call>",
    '{"name": "", "arguments": {}}',
    "plain prose with no call",
    "",
])
def test_prose_and_near_misses_are_not_calls(reply):
    calls, remaining = parse_text_calls(reply)
    assert calls == []
    assert remaining == reply


def test_a_closing_tag_inside_the_json_of_a_block_does_not_cut_it():
    reply = '<tool_call>{"name": "write_file", "arguments": {"content": "a </tool_call> b"}}</tool_call> done'
    calls, rest = parse_text_calls(reply)
    assert [(c.name, c.arguments) for c in calls] == [("write_file", {"content": "a </tool_call> b"})]
    assert rest == "done"


def test_several_blocks_in_one_reply_are_all_found():
    reply = ('<tool_call>{"name": "recall", "arguments": {"query": "a"}}</tool_call>'
             '<tool_call>{"name": "recall", "arguments": {"query": "b"}}</tool_call>')
    calls, _ = parse_text_calls(reply)
    assert [c.arguments["query"] for c in calls] == ["a", "b"]


@pytest.mark.parametrize("raw, kept", [
    ("<think>secret plan</think>The answer.", "The answer."),
    ("reasoning without opening tag</think>\nThe answer.", "The answer."),
    ("<think>cut off mid-thought", ""),
    ("No thinking here.", "No thinking here."),
])
def test_reasoning_blocks_are_stripped(raw, kept):
    assert strip_thinking(raw) == kept


def test_completion_with_text_call_gets_an_invented_id_and_parsed_arguments():
    data = {"choices": [{"message": {"content": '<tool_call>{"name": "recall", "arguments": {"query": "db"}}'
                                                 "</tool_call>"}, "finish_reason": "stop"}]}
    completion = parse_completion(data, "http://x")
    assert completion.text_calls
    assert completion.tool_calls[0].id
    assert completion.tool_calls[0].arguments == {"query": "db"}


@pytest.mark.parametrize("arguments, error", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (42, "must be a JSON object"),
])
def test_malformed_structured_arguments_become_a_call_with_an_error(arguments, error):
    data = {"choices": [{"message": {"content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "recall", "arguments": arguments}}]}}]}
    call = parse_completion(data).tool_calls[0]
    assert call.arguments is None and error in call.error


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parser_never_raises_and_never_loses_text_without_calls(reply):
    calls, remaining = parse_text_calls(reply)
    if not calls:
        assert remaining == reply
    for c in calls:
        assert isinstance(c.name, str) and c.name


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40).filter(lambda s: s.strip()), st.dictionaries(st.text(max_size=6), _json, max_size=4),
       st.text(max_size=60).filter(lambda s: "<tool_call>" not in s))
def test_any_well_formed_block_round_trips(name, args, prose):
    reply = prose + "<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>"
    calls, _ = parse_text_calls(reply)
    assert [(c.name, c.arguments) for c in calls] == [(name.strip(), args)]


@settings(max_examples=200, deadline=None)
@given(_json)
def test_any_response_body_parses_or_raises_endpoint_error(body):
    from azclaw.errors import EndpointError
    data = {"choices": [{"message": {"content": "x", "tool_calls": body}}]} if isinstance(body, list) else body
    try:
        parse_completion(data if isinstance(data, dict) else {"choices": body})
    except EndpointError:
        pass


ADVERSARIAL = {
    # cubic for the old fence regex: a whitespace run between ```json and a brace that is never closed
    "fence with a whitespace run": "```json" + " " * 400_000 + "{" + " " * 400_000 + "x",
    "fence never closed": "```" + "\n" * 800_000 + "{}",
    # quadratic for the old <think> regex: many openings, no closing
    "unclosed think tags": "<think>" * 150_000,
    "think tags closed at the very end": "<think>" * 150_000 + "</think>done",
    "unclosed tool_call tags": "<tool_call>" * 100_000,
    "tool_call blocks of junk": "<tool_call>{</tool_call>" * 40_000,
    "braces": "{" * 400_000 + "}" * 400_000,
    "blocks opening strings": '<tool_call>{"a": "</tool_call>' * 30_000,
    "blocks opening arrays": "<tool_call>{\"a\": [[[[[[[[</tool_call>" * 30_000,
    "blocks with a long key": ('<tool_call>{"' + "k" * 1000 + " ") * 800,
}


@pytest.mark.parametrize("reply", list(ADVERSARIAL.values()), ids=list(ADVERSARIAL))
def test_the_parser_finishes_on_adversarial_replies_of_a_megabyte(reply):
    """Linear time: each of these took the old regexes minutes to hours; a
    thread bounds the wait generously instead of timing the parser."""
    import threading

    from helpers import CLI_TIMEOUT
    done = []
    worker = threading.Thread(target=lambda: done.append(parse_text_calls(strip_thinking(reply))), daemon=True)
    worker.start()
    worker.join(CLI_TIMEOUT)
    assert done, f"the parser did not finish within {CLI_TIMEOUT} s"


@pytest.mark.parametrize("raw, kept", [
    ("<think>a</think>b<think>c</think>d", "bd"),
    ("x<think>a<think>b</think>y</think>z", "z"),
    ("<think>open<think>still</think>answer", "answer"),
    ("```json\n{\"name\": \"recall\", \"arguments\": {}}\n```", "```json\n{\"name\": \"recall\", \"arguments\": {}}\n```"),
])
def test_think_blocks_are_removed_as_before(raw, kept):
    assert strip_thinking(raw) == kept
