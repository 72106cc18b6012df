"""An agent's role and its topic role reach its system prompt; the
API key travels as a Bearer token."""

import pytest

from azclaw import Agent, Topic
from azclaw.errors import ConfigError
from helpers import cli_env, orchestrator, team


def test_agent_role_and_topic_role_both_reach_the_system_prompt_topic_role_after(fake_llm):
    fake = fake_llm()
    alice = Agent("alice", role="ROLE-OWN-7c1 designs the schema", endpoint=fake.url, retries=0)
    bob = Agent("bob", role="ROLE-OWN-bob", endpoint=fake.url, retries=0)
    topic = Topic.from_dict({"title": "Roles", "initial_prompt": "go",
                             "agent_roles": {"alice": "ROLE-TOPIC-9f2 also owns migrations"}})
    orchestrator([alice, bob], topic=topic).run(max_rounds=1)

    [request] = fake.chats_of("alice")
    system = request.system
    assert "ROLE-OWN-7c1 designs the schema" in system
    assert "ROLE-TOPIC-9f2 also owns migrations" in system
    assert system.index("ROLE-OWN-7c1") < system.index("ROLE-TOPIC-9f2"), "topic role is added after"
    [other] = fake.chats_of("bob")
    assert "ROLE-OWN-bob" in other.system
    assert "ROLE-TOPIC-9f2" not in other.system, "a topic role goes only to the agent it names"


def test_topic_role_alone_reaches_an_agent_without_own_role(fake_llm):
    fake = fake_llm()
    topic = Topic.from_dict({"title": "Roles", "agent_roles": {"carol": "ROLE-TOPIC-ONLY-55"}})
    orchestrator(team(fake.url, "carol"), topic=topic).run(max_rounds=1)
    assert "ROLE-TOPIC-ONLY-55" in fake.chats_of("carol")[0].system


def test_api_key_is_sent_as_bearer_token(fake_llm):
    fake = fake_llm()
    orchestrator(team(fake.url, "alice", api_key="sk-test-123")).run(max_rounds=1)
    assert fake.chats, "no chat request reached the server"
    for request in fake.chats:
        assert request.header("Authorization") == "Bearer sk-test-123"


def test_api_key_comes_from_AZCLAW_API_KEY_when_not_given(fake_llm, monkeypatch):
    fake = fake_llm()
    monkeypatch.setenv("AZCLAW_API_KEY", "sk-from-env-42")
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    assert fake.chats[0].header("Authorization") == "Bearer sk-from-env-42"


def test_no_authorization_header_without_a_key(fake_llm):
    fake = fake_llm()
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    assert fake.chats[0].header("Authorization") is None


def test_cli_sends_AZCLAW_API_KEY_as_bearer_token(fake_llm, azclaw):
    fake = fake_llm()
    proc = azclaw("run", "--task", "Say hi", "--endpoint", fake.url, "--max-rounds", "1", "--quiet",
                  env=cli_env(AZCLAW_API_KEY="sk-cli-77"))
    assert proc.returncode == 0, proc.stderr
    assert fake.chats and all(r.header("Authorization") == "Bearer sk-cli-77" for r in fake.chats)


@pytest.mark.parametrize("name", ["", "has space", "../escape", "a/b", "-dash-first", "x" * 65])
def test_agent_with_unusable_name_is_refused(name):
    with pytest.raises(ConfigError, match="agent name"):
        Agent(name)
