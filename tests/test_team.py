"""Team files (``team.py``): the team's pool and headers, an agent's own
endpoint and headers winning over the team's, every problem named with
its field. (The older team-file tests are in test_toolmodes.py.)"""

import json

import pytest

from azclaw.client.pool import Pool
from azclaw.errors import ConfigError
from azclaw.team import read_team
from helpers import assert_one_error_line


def write(workdir, content) -> str:
    (workdir / "team.json").write_text(json.dumps(content))
    return "team.json"


def test_a_team_file_puts_agents_without_a_url_on_its_pool_and_sends_its_headers(fake_llm, azclaw, workdir):
    a, b, own = fake_llm(), fake_llm(), fake_llm()
    write(workdir, {"endpoints": [a.url, b.base], "headers": {"X-Team": "ledger", "X-Tier": "low"},
                    "agents": [{"name": "p1"}, {"name": "p2"}, {"name": "p3"}, {"name": "p4"},
                               {"name": "solo", "endpoint": own.url, "headers": {"X-Tier": "high"}}]})
    proc = azclaw("run", "--task", "x", "--team", "team.json", "--max-rounds", "2", "--parallel", "--quiet",
                  "--header", "X-Night=1")
    assert proc.returncode == 0, proc.stderr
    assert {r.agent for r in own.chats} == {"solo"}
    pooled = {r.agent: [f.base for f in (a, b) if r in f.chats] for r in a.chats + b.chats}
    assert sorted(pooled) == ["p1", "p2", "p3", "p4"] and len(a.chats) == len(b.chats) == 4
    for r in a.chats + b.chats:
        assert (r.header("X-Team"), r.header("X-Tier"), r.header("X-Night")) == ("ledger", "low", "1")
    assert {(r.header("X-Team"), r.header("X-Tier"), r.header("X-Night")) for r in own.chats} == \
        {("ledger", "high", "1")}  # the agent's own header wins; the team's and the command line's stay


def test_the_command_lines_endpoint_wins_over_the_team_files_pool(fake_llm, azclaw, workdir):
    pooled, given = fake_llm(), fake_llm()
    write(workdir, {"endpoints": [pooled.url], "agents": [{"name": "a"}]})
    proc = azclaw("run", "--task", "x", "--team", "team.json", "--endpoint", given.url, "--max-rounds", "1",
                  "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert not pooled.chats and [r.agent for r in given.chats] == ["a"]


def test_an_agents_endpoint_list_stays_its_own_fail_over_list(workdir):
    write(workdir, {"endpoints": ["http://g1:8080", "http://g2:8080"],
                    "agents": [{"name": "a", "endpoint": ["http://x:1", "http://y:1"]}, {"name": "b"}]})
    team = read_team(workdir / "team.json")
    assert team.pool == Pool(("http://g1:8080", "http://g2:8080"))
    assert team.agents[0].endpoint == ["http://x:1", "http://y:1"] and team.agents[1].endpoint == ""


@pytest.mark.parametrize("content, named", [
    ({"endpoints": "http://g:1", "agents": [{"name": "a"}]}, "team.json: endpoints: expected a list of http(s)"),
    ({"endpoints": [], "agents": [{"name": "a"}]}, "team.json: endpoints: expected a list"),
    ({"endpoints": ["http://g:1", "http://g:1/v1"], "agents": [{"name": "a"}]}, "team.json: endpoints: "),
    ({"headers": {"X-A": 5}, "agents": [{"name": "a"}]}, "team.json: headers: X-A: the value 5"),
    ({"headers": ["X-A"], "agents": [{"name": "a"}]}, "team.json: headers: expected NAME: VALUE pairs"),
    ({"agents": [{"name": "a", "headers": {"bad name": "x"}}]}, "team.json: agents[0].headers: 'bad name'"),
    ({"agents": [{"name": "a", "headers": {"X-A": "one\ntwo"}}]}, "team.json: agents[0].headers: X-A"),
    ({"agents": [{"name": "a"}], "pool": []}, "team.json: pool: unknown field; valid fields: agents, endpoints"),
])
def test_a_bad_pool_or_header_in_a_team_file_is_one_error_line_naming_the_field(azclaw, workdir, content, named):
    write(workdir, content)
    assert_one_error_line(azclaw("run", "--task", "x", "--team", "team.json", "--max-rounds", "1"), named)
    with pytest.raises(ConfigError):
        read_team(workdir / "team.json")
