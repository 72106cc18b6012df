"""Outages are waited out in time, with a log line when an endpoint goes
down, one per retry, one when it is back; a loading server is waited for."""

import json
import logging
import threading

import pytest

from azclaw import Agent
from azclaw.errors import EndpointError
from azclaw.client import LLMClient
from azclaw.client.llm import Outages
from fakellm import FakeLLM, Reply, error, text
from helpers import wait_for

HI = [{"role": "user", "content": "hi"}]


def quick(url, **kw) -> LLMClient:
    kw.setdefault("backoff", 0.001)
    kw.setdefault("max_backoff", 0.01)
    return LLMClient(url, **kw)


def test_more_failures_than_the_old_retry_count_are_ridden_out_within_the_outage_budget(fake_llm, caplog):
    fake = fake_llm(script=[error(503)] * 4 + [error(502), error(429, headers={"Retry-After": "0"}), text("back")])
    with caplog.at_level(logging.INFO, logger="azclaw"):
        completion = quick(fake.url).chat(HI)
    assert completion.text == "back" and completion.attempts == 7
    down = [r.message for r in caplog.records if " is down" in r.message]
    back = [r.message for r in caplog.records if " is back after" in r.message]
    retries = [r.message for r in caplog.records if "; retry " in r.message]
    assert len(down) == 1 and fake.url in down[0] and "HTTP 503" in down[0]
    assert len(back) == 1 and fake.url in back[0]
    assert len(retries) == 6 and "retry 6 in" in retries[-1]


def test_a_request_gives_up_when_the_endpoint_failed_longer_than_the_outage_budget(fake_llm):
    fake = fake_llm(responder=lambda r: error(503))
    with pytest.raises(EndpointError) as info:
        quick(fake.url, max_outage=0.3, backoff=0.02, max_backoff=0.05).chat(HI)
    assert fake.url in str(info.value) and "HTTP 503" in str(info.value)
    assert "gave up after" in str(info.value) and " s on 1 endpoint(s)" in str(info.value)
    assert len(fake.chats) >= 2


def test_retries_still_caps_the_attempts_when_given(fake_llm):
    fake = fake_llm(responder=lambda r: error(500))
    with pytest.raises(EndpointError) as info:
        quick(fake.url, retries=2).chat(HI)
    assert "gave up after 3 attempts" in str(info.value)
    assert len(fake.chats) == 3


def test_malformed_replies_are_retried_a_few_times_not_for_the_whole_outage_budget(fake_llm):
    fake = fake_llm(responder=lambda r: Reply(body="<html>not json</html>"))
    with pytest.raises(EndpointError) as info:
        quick(fake.url).chat(HI)
    assert "not JSON" in str(info.value)
    assert len(fake.chats) == 5


def test_a_server_that_goes_away_and_comes_back_is_waited_for(dead_url, caplog):
    port = int(dead_url.split(":")[2].split("/")[0])
    client = quick(dead_url, backoff=0.05, max_backoff=0.2)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(c=client.chat(HI)), daemon=True)
    with caplog.at_level(logging.INFO, logger="azclaw"):
        worker.start()
        wait_for(lambda: sum("; retry " in r.message for r in caplog.records) >= 3, what="three retries")
        with FakeLLM(port=port, script=[text("I am back")]):
            worker.join(60)
    assert result["c"].text == "I am back"
    messages = [r.message for r in caplog.records]
    assert sum(" is down: connection refused" in m for m in messages) == 1
    assert sum(" is back after " in m for m in messages) == 1


def test_a_cancel_event_ends_the_wait_between_retries(fake_llm):
    fake = fake_llm(responder=lambda r: error(503, headers={"Retry-After": "30"}))
    cancel = threading.Event()
    client = LLMClient(fake.url, cancel=cancel)
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(EndpointError) as info:
        client.chat(HI)
    assert "stopped while waiting to retry" in str(info.value)
    assert len(fake.chats) == 1


LOADING = (503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})


def test_health_check_waits_for_a_server_that_is_loading_its_model(fake_llm, caplog):
    # llama.cpp answers 503 on every route while it loads
    loaded = threading.Event()
    fake = fake_llm(routes={route: (lambda request: {"status": "ok", "data": []} if loaded.is_set() else LOADING)
                            for route in ("/health", "/v1/models")})
    threading.Timer(1.0, loaded.set).start()
    with caplog.at_level(logging.INFO, logger="azclaw"):
        assert LLMClient(fake.url).health_check() == fake.base + "/health"
    paths = [r.path for r in fake.requests]
    assert paths[:2] == ["/health", "/v1/models"] and paths[-1] == "/health" and len(paths) >= 3
    assert caplog.text.count("Loading model") == 1 and "is ready" in caplog.text


def test_health_check_gives_up_on_a_server_that_keeps_loading(fake_llm):
    fake = fake_llm(routes={"/health": LOADING, "/v1/models": LOADING})
    with pytest.raises(EndpointError) as info:
        LLMClient(fake.url).health_check(loading_wait=0.3)
    assert fake.base in str(info.value) and "still not ready" in str(info.value)


def test_health_check_accepts_an_empty_200_as_vllm_sends(fake_llm):
    fake = fake_llm(routes={"/health": (200, b"")})
    assert LLMClient(fake.url).health_check() == fake.base + "/health"


def test_a_run_outlasts_an_outage_longer_than_its_old_retry_count(fake_llm):
    # every turn's first requests fail: the old 4 retries would have lost turns
    failures = {"n": 0}

    def responder(request):
        failures["n"] += 1
        return error(503) if failures["n"] % 7 else text(f"reply after {failures['n']} requests")
    fake = fake_llm(responder=responder)
    agent = Agent("architect", endpoint=fake.url, retries=None)
    from helpers import fast_clients, orchestrator
    orch = orchestrator([agent], client_factory=fast_clients)
    stats = orch.run(max_rounds=3)
    assert stats.errors == 0
    assert [m.text for m in orch.history] == ["reply after 7 requests", "reply after 14 requests",
                                              "reply after 21 requests"]
    journal = [json.loads(line) for line in orch.journal_path.read_text().splitlines()]
    assert all(not e.get("errors") for e in journal if e.get("event") == "turn")


def test_the_outage_budget_counts_from_when_the_endpoint_went_down_not_per_request(fake_llm):
    fake = fake_llm(responder=lambda r: error(503))
    run = Outages()  # what the clients of one run share
    client = quick(fake.url, max_outage=0.5, backoff=0.05, max_backoff=0.1, outages=run)
    with pytest.raises(EndpointError):
        client.chat(HI)
    first = len(fake.chats)
    other_agent = quick(fake.url, max_outage=0.5, outages=run)
    with pytest.raises(EndpointError) as info:
        other_agent.chat(HI)
    assert first >= 2 and len(fake.chats) == first + 1, "the budget was spent: one attempt, no more waiting"
    assert "gave up after 1 attempts" in str(info.value)
