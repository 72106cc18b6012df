"""Constrained tool calls: the schema built from the tools, and the reader
that turns any reply into a call, a final message or an error."""

from __future__ import annotations

import json

import pytest
from properties import given, settings, st  # hypothesis, or a skip without it

from azclaw.tools.builtin import build_default_registry
from azclaw.constrained import (MAX_STRING, REPLY, arguments_schema, assistant_message, budget_chars,
                                parse_reply, response_format, result_message, step_format)
from azclaw.tools.registry import Tool

TOOLS = build_default_registry().allowed(can_write=True)
BY_NAME = {t.name: t for t in TOOLS}


def alternatives(step) -> dict[str, dict]:
    alts = step.schema.get("anyOf", [step.schema])
    return {a["properties"]["tool"]["enum"][0]: a for a in alts}


def strings(schema: dict) -> dict[str, int]:
    return {n: s["maxLength"] for n, s in schema["properties"].items() if s["type"] == "string"}


# -- the schema -------------------------------------------------------------------

def test_one_alternative_per_tool_and_one_for_the_final_message():
    step = step_format(TOOLS)
    assert list(alternatives(step)) == [t.name for t in TOOLS] + [REPLY]
    recall = alternatives(step)["recall"]
    assert recall["required"] == ["tool", "arguments"] and recall["additionalProperties"] is False
    assert recall["properties"]["arguments"]["required"] == []
    assert alternatives(step)["write_file"]["properties"]["arguments"]["required"] == ["path", "content"]
    assert alternatives(step)[REPLY]["properties"]["arguments"]["required"] == ["message"]


def test_a_step_that_must_call_a_tool_offers_no_final_message():
    step = step_format(TOOLS, allow_reply=False)
    assert REPLY not in alternatives(step) and not step.allow_reply


def test_without_tools_only_the_final_message_is_offered():
    step = step_format([])
    assert step.schema["properties"]["tool"]["enum"] == [REPLY] and "anyOf" not in step.schema
    assert step.allow_reply


def test_a_tool_named_reply_gets_another_name_for_the_final_message():
    tool = Tool("reply", "answer a ticket", {"text": {"type": "string"}}, ["text"], lambda text: text)
    step = step_format([tool])
    assert step.reply_name == "reply_" and set(alternatives(step)) == {"reply", "reply_"}


@pytest.mark.parametrize("max_tokens", [48, 128, 256, 512, 1024, 4096])
def test_every_string_is_bounded_and_a_call_fits_its_budget(max_tokens):
    for tool in TOOLS:
        limits = strings(arguments_schema(tool, max_tokens))
        assert set(limits) == {n for n, s in tool.params.items() if s["type"] == "string"}
        assert all(16 <= n <= MAX_STRING for n in limits.values())
        if max_tokens >= 128:
            assert sum(limits.values()) <= budget_chars(max_tokens), (tool.name, limits)


def test_long_text_arguments_get_most_of_the_budget():
    write = strings(arguments_schema(BY_NAME["write_file"], 256))
    remember = strings(arguments_schema(BY_NAME["remember"], 256))
    assert write["content"] > 4 * write["path"] and write["path"] <= 160
    assert remember["text"] > 4 * remember["title"] and remember["title"] <= 80
    assert strings(arguments_schema(BY_NAME["write_file"], 1024))["content"] > 3 * write["content"]


def test_a_tools_own_bounds_are_kept_when_smaller():
    tool = Tool("tag", "tag it", {"label": {"type": "string", "maxLength": 5},
                                  "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                                  "count": {"type": "integer"}}, ["label"], lambda label, tags=(), count=0: label)
    args = arguments_schema(tool, 256)
    assert args["properties"]["label"]["maxLength"] == 5
    assert args["properties"]["tags"]["maxItems"] == 3 and "maxLength" in args["properties"]["tags"]["items"]
    assert args["properties"]["count"] == {"type": "integer"}
    assert tool.params["label"] == {"type": "string", "maxLength": 5}  # the tool's own schema is not touched


def test_response_format_in_the_openai_and_the_llama_cpp_python_shape():
    step = step_format(TOOLS[:1])
    assert step.response_format() == {"type": "json_schema", "json_schema": {
        "name": "azclaw_step", "schema": step.schema, "strict": False}}
    assert step.response_format("json_object") == {"type": "json_object", "schema": step.schema}
    with pytest.raises(ValueError, match="grammar"):
        response_format(step.schema, "grammar")


# -- reading replies ----------------------------------------------------------------

@pytest.mark.parametrize("text, name, args", [
    ('{"tool": "recall", "arguments": {"query": "database"}}', "recall", {"query": "database"}),
    ('  {"tool":"write_file","arguments":{"path":"a.py","content":"x = 1\\n"}}\n', "write_file",
     {"path": "a.py", "content": "x = 1\n"}),
    ('```json\n{"tool": "remember", "arguments": {"text": "t"}}\n```', "remember", {"text": "t"}),
    ('{"name": "recall", "parameters": {"query": "q"}}', "recall", {"query": "q"}),
    ('{"tool": "recall", "arguments": "{\\"query\\": \\"q\\"}"}', "recall", {"query": "q"}),
    ('{"tool": "list_files"}', "list_files", {}),
    ('Sure! {"tool": "recall", "arguments": {"query": "q"}} done', "recall", {"query": "q"}),
    ('<think>plan</think>{"tool": "recall", "arguments": {}}', "recall", {}),
    ('{"tool": "write_file", "arguments": {"path": "a.py", "content": "x = 1\nprint(x)\n"}}', "write_file",
     {"path": "a.py", "content": "x = 1\nprint(x)\n"}),  # raw newlines: some grammars let them through
])
def test_a_call_is_read(text, name, args):
    reply = parse_reply(text, step_format(TOOLS))
    assert not reply.error and not reply.final and reply.message == ""
    assert [(c.name, c.arguments, c.error) for c in reply.calls] == [(name, args, "")]


def test_the_final_message_is_read():
    reply = parse_reply('{"tool": "reply", "arguments": {"message": " Done: plan stored. "}}', step_format(TOOLS))
    assert reply.final and reply.message == "Done: plan stored." and reply.calls == [] and not reply.error


@pytest.mark.parametrize("text, why", [
    ('{"tool": "recall", "arguments": {"query": "unfinished', "not valid JSON"),
    ("", "empty"),
    ("I think we should plan first.", "not valid JSON"),
    ("[1, 2]", "JSON list, not an object"),
    ('{"arguments": {"query": "x"}}', "names no tool"),
    ('{"tool": "", "arguments": {}}', "names no tool"),
    ('{"tool": "reply", "arguments": {"text": "hi"}}', 'needs {"message": "text"}'),
])
def test_a_reply_that_is_neither_gives_an_error_and_no_call(text, why):
    reply = parse_reply(text, step_format(TOOLS))
    assert why in reply.error and reply.calls == [] and not reply.final
    assert "expected {\"tool\": one of recall, remember" in reply.error


def test_a_cut_off_reply_says_so():
    reply = parse_reply('{"tool": "write_file", "arguments": {"path": "a.py", "content": "def', step_format(TOOLS),
                        finish_reason="length")
    assert "cut off at max_tokens" in reply.error and not reply.calls


def test_arguments_that_are_not_an_object_become_a_call_with_an_error():
    reply = parse_reply('{"tool": "recall", "arguments": [1]}', step_format(TOOLS))
    [call] = reply.calls
    assert call.arguments is None and "must be a JSON object, got list" in call.error


def test_the_final_name_is_a_tool_name_when_no_final_message_is_offered():
    reply = parse_reply('{"tool": "reply", "arguments": {"message": "hi"}}', step_format(TOOLS, allow_reply=False))
    assert not reply.final and [c.name for c in reply.calls] == ["reply"]  # the registry answers "unknown tool"


def test_replayed_steps_are_plain_text():
    assert assistant_message('{"tool": "recall"}') == {"role": "assistant", "content": '{"tool": "recall"}'}
    assert result_message("recall", "ERROR: x") == {"role": "user", "content": "Result of recall:\nERROR: x"}


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
                           max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.text() | json_values.map(json.dumps) | st.builds(lambda v, cut: json.dumps(v)[:cut], json_values,
                                                             st.integers(0, 60)))
def test_no_reply_makes_the_reader_raise(text):
    reply = parse_reply(text, step_format(TOOLS), finish_reason="length")
    assert bool(reply.error) + bool(reply.calls) + reply.final == 1
    for call in reply.calls:
        assert isinstance(call.name, str) and (isinstance(call.arguments, dict) or call.error)


def _arguments(tool: Tool):
    props = {}
    for name, spec in tool.params.items():
        value = {"string": st.text(max_size=40), "integer": st.integers(-5, 500)}[spec["type"]]
        props[name] = value if name in tool.required else st.none() | value
    return st.fixed_dictionaries(props).map(lambda d: {k: v for k, v in d.items() if v is not None})


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(TOOLS).flatmap(lambda t: st.tuples(st.just(t.name), _arguments(t))), st.booleans())
def test_every_call_the_schema_allows_reads_back_as_itself(call, spaced):
    name, args = call
    text = json.dumps({"tool": name, "arguments": args}, indent=2 if spaced else None, ensure_ascii=spaced)
    reply = parse_reply(text, step_format(TOOLS))
    assert [(c.name, c.arguments) for c in reply.calls] == [(name, args)] and not reply.error


def test_a_json_reply_whose_text_holds_a_think_tag_reads_back_as_sent():
    args = {"text": "The model wrote </think> in its notes.", "title": "tags"}
    for text in (json.dumps({"tool": "remember", "arguments": args}),
                 "<think>store it</think>" + json.dumps({"tool": "remember", "arguments": args})):
        reply = parse_reply(text, step_format(TOOLS))
        assert [(c.name, c.arguments) for c in reply.calls] == [("remember", args)] and not reply.error, text
