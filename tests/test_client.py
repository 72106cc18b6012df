"""The stdlib client against a real OpenAI-compatible server."""

import json

import pytest

from azclaw.errors import EndpointError
from azclaw.client import LLMClient
from azclaw import RunAborted, Topic
from fakellm import Reply, calls, error, text
from helpers import assert_one_error_line, orchestrator, team


def test_chat_returns_text_tool_calls_and_usage(fake_llm):
    fake = fake_llm(script=[Reply(text="Checking.", tool_calls=[("recall", {"query": "db"}),
                                                               ("list_files", {})])],
                    tokens=(321, 17))
    completion = LLMClient(fake.url, model="m-1", retries=0).chat(
        [{"role": "user", "content": "hello"}], tools=[{"type": "function", "function": {"name": "recall"}}])

    assert completion.text == "Checking."
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("recall", {"query": "db"}),
                                                                      ("list_files", {})]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (321, 17)
    [request] = fake.chats
    assert request.body["model"] == "m-1"
    assert request.messages == [{"role": "user", "content": "hello"}]
    assert request.tool_names == ["recall"]


def test_chat_without_usage_counts_zero_tokens(fake_llm):
    fake = fake_llm(script=[text("plain", usage=False)])
    # a plain reply: a streamed one without counts gets estimated ones (test_client_stream.py)
    completion = LLMClient(fake.url, retries=0, stream=False).chat([{"role": "user", "content": "hi"}])
    assert completion.text == "plain"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (0, 0)


def test_malformed_tool_arguments_become_a_call_with_an_error_not_an_exception(fake_llm):
    fake = fake_llm(script=[calls(("recall", '{"query": '))])
    [call] = LLMClient(fake.url, retries=0).chat([{"role": "user", "content": "x"}]).tool_calls
    assert call.name == "recall" and call.arguments is None and call.error


def test_think_block_is_stripped_from_the_returned_text(fake_llm):
    fake = fake_llm(script=[text("<think>SECRET-REASONING-1</think>The answer is 4.")])
    completion = LLMClient(fake.url, retries=0).chat([{"role": "user", "content": "2+2"}])
    assert completion.text == "The answer is 4."


def test_think_block_never_reaches_the_next_round(fake_llm):
    fake = fake_llm(per_agent={"alice": [text("<think>SECRET-REASONING-2 plan plan</think>VISIBLE-ANSWER-2")]})
    orch = orchestrator(team(fake.url, "alice", "bob"))
    orch.set_task("Add numbers")
    orch.run(max_rounds=2)

    round2 = [r for r in fake.chats if r.round == 2]
    assert len(round2) == 2
    for request in round2:
        assert "VISIBLE-ANSWER-2" in request.user
        assert "SECRET-REASONING-2" not in request.raw
    checkpoint = json.loads(orch.checkpoint_path.read_text())
    assert "SECRET-REASONING-2" not in json.dumps(checkpoint["history"])


def test_health_check_hits_health(fake_llm):
    fake = fake_llm()
    client = LLMClient(fake.url, retries=0)
    answered = client.health_check()
    assert answered == fake.base + "/health"
    assert [(r.method, r.path) for r in fake.requests] == [("GET", "/health")]


def test_run_checks_health_before_the_first_chat(fake_llm):
    fake = fake_llm()
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    paths = [(r.method, r.path) for r in fake.requests]
    assert paths[0] == ("GET", "/health")
    assert ("POST", "/v1/chat/completions") in paths[1:]


def test_health_check_of_unreachable_endpoint_names_the_url(dead_url):
    with pytest.raises(EndpointError) as info:
        LLMClient(dead_url, retries=0).health_check()
    assert dead_url.rsplit("/v1", 1)[0] in str(info.value)


def test_run_with_unreachable_endpoint_stops_with_a_message_naming_the_url(dead_url):
    orch = orchestrator(team(dead_url, "alice"), topic=Topic.from_dict({"title": "t"}, name="t"))
    with pytest.raises(EndpointError) as info:
        orch.run(max_rounds=3)
    assert "127.0.0.1:" + dead_url.split(":")[2].split("/")[0] in str(info.value)
    assert orch.stats.rounds == 0


def test_endpoint_dying_mid_run_aborts_naming_the_url(dead_url):
    orch = orchestrator(team(dead_url, "alice"), check_health=False, max_failed_rounds=2)
    with pytest.raises(RunAborted) as info:
        orch.run(max_rounds=5)
    assert dead_url in str(info.value)
    # a round in which every turn failed is not done: round 1 was tried twice, and no round counted
    assert orch.stats.rounds == 0 and orch.stats.errors == 2


def test_chat_to_unreachable_endpoint_raises_endpoint_error_naming_the_url(dead_url):
    with pytest.raises(EndpointError) as info:
        LLMClient(dead_url, retries=0).chat([{"role": "user", "content": "x"}])
    assert dead_url in str(info.value)


def test_client_error_status_is_not_retried_and_names_the_url(fake_llm):
    fake = fake_llm(script=[error(400), text("never reached")])
    with pytest.raises(EndpointError) as info:
        LLMClient(fake.url, retries=3).chat([{"role": "user", "content": "x"}])
    assert fake.url in str(info.value) and "400" in str(info.value)
    assert len(fake.chats) == 1


def test_server_error_is_retried_then_succeeds(fake_llm):
    fake = fake_llm(script=[error(503, headers={"Retry-After": "0"}), text("second try")])
    completion = LLMClient(fake.url, retries=2).chat([{"role": "user", "content": "x"}])
    assert completion.text == "second try"
    assert len(fake.chats) == 2


def test_cli_with_unreachable_endpoint_prints_one_error_line_with_the_url(dead_url, azclaw):
    proc = azclaw("run", "--task", "anything", "--endpoint", dead_url, "--max-rounds", "1")
    port = dead_url.split(":")[2].split("/")[0]
    line = assert_one_error_line(proc, f"127.0.0.1:{port}")
    assert proc.returncode == 1, line
