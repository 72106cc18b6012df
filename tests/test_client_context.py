"""Context overflow is its own error with the server's limit; the client
learns a server's context size; the model name ``default`` is resolved, and
a model name the server does not serve is refused before a run."""

import logging

import pytest

from azclaw import ConfigError
from azclaw.errors import ContextOverflow, EndpointError
from azclaw.client import LLMClient
from fakellm import OVERFLOW_SERVERS, model_not_found, overflow, text
from helpers import assert_one_error_line

HI = [{"role": "user", "content": "hi"}]
LIMITS = {"llama.cpp": 4096, "llama.cpp-old": None, "vllm": 4096, "openai": 4096, "ollama": None,
          "llama-cpp-python": 4096}


@pytest.mark.parametrize("server", OVERFLOW_SERVERS)
def test_a_context_length_400_is_a_context_overflow_with_the_limit_when_the_server_says_it(fake_llm, server):
    fake = fake_llm(script=[overflow(server, n_ctx=4096, prompt=5000), text("never")])
    client = LLMClient(fake.url, backoff=0.001)
    with pytest.raises(ContextOverflow) as info:
        client.chat(HI)
    assert isinstance(info.value, EndpointError)
    assert info.value.limit == LIMITS[server]
    assert fake.url in str(info.value) and "context" in str(info.value)
    assert len(fake.chats) == 1, "the same request is not sent again"
    if LIMITS[server]:
        assert client.context_size() == 4096
        assert [r.path for r in fake.requests if r.method == "GET"] == [], "learnt from the error, not asked"


def test_the_prompt_size_the_server_counted_is_kept(fake_llm):
    fake = fake_llm(script=[overflow("llama.cpp", n_ctx=2048, prompt=3100)])
    with pytest.raises(ContextOverflow) as info:
        LLMClient(fake.url).chat(HI)
    assert (info.value.limit, info.value.prompt_tokens) == (2048, 3100)


def test_an_ordinary_400_is_not_a_context_overflow(fake_llm):
    fake = fake_llm(script=[overflow("vllm").__class__(status=400, body='{"error": {"message": "bad tool"}}')])
    with pytest.raises(EndpointError) as info:
        LLMClient(fake.url).chat(HI)
    assert not isinstance(info.value, ContextOverflow)


SERVERS = {
    "llama.cpp": dict(routes={"/props": {"default_generation_settings": {"n_ctx": 8192}, "total_slots": 1}}),
    "llama.cpp, newer": dict(routes={"/props": {"n_ctx": 16384}}),
    "vLLM": dict(models=[{"id": "Qwen/Qwen3-8B", "owned_by": "vllm", "max_model_len": 32768}]),
    "OpenRouter": dict(models=[{"id": "a/b", "context_length": 65536}]),
    "Ollama num_ctx": dict(models=[{"id": "qwen3:8b", "owned_by": "library"}],
                           routes={"/api/show": {"parameters": "stop \"<|im_end|>\"\nnum_ctx    12288",
                                                 "model_info": {"qwen3.context_length": 40960}}}),
    "Ollama loaded": dict(models=[{"id": "qwen3:8b", "owned_by": "library"}],
                          routes={"/api/show": {"parameters": "", "model_info": {"qwen3.context_length": 40960}},
                                  "/api/ps": {"models": [{"name": "qwen3:8b", "context_length": 4096}]}}),
}
SERVERS["LM Studio"] = dict(models=[{"id": "qwen2.5-7b-instruct", "owned_by": "organization_owner"}],
                           routes={"/api/v0/models": {"data": [{"id": "qwen2.5-7b-instruct", "state": "loaded",
                                                                "max_context_length": 32768,
                                                                "loaded_context_length": 8192}]}})
SIZES = {"llama.cpp": 8192, "llama.cpp, newer": 16384, "vLLM": 32768, "OpenRouter": 65536, "Ollama num_ctx": 12288,
         "Ollama loaded": 4096, "LM Studio": 8192}


@pytest.mark.parametrize("server", list(SERVERS))
def test_context_size_is_asked_of_the_server_once(fake_llm, server):
    fake = fake_llm(**SERVERS[server])
    client = LLMClient(fake.url)
    assert client.context_size() == SIZES[server]
    asked = len(fake.requests)
    assert client.context_size() == SIZES[server]
    assert len(fake.requests) == asked, "kept, not asked again"


def test_context_size_is_none_when_the_server_does_not_tell_and_is_not_asked_again(fake_llm):
    fake = fake_llm(models=[{"id": "m1"}, {"id": "m2"}])
    client = LLMClient(fake.url)
    assert client.context_size() is None
    asked = len(fake.requests)
    assert client.context_size() is None and len(fake.requests) == asked


def test_a_server_without_a_model_named_default_gets_the_one_it_serves(fake_llm, caplog):
    fake = fake_llm(responder=lambda r: model_not_found("vllm") if r.body["model"] == "default" else text("hi"),
                    models=[{"id": "Qwen/Qwen3-8B", "owned_by": "vllm"}])
    client = LLMClient(fake.url)
    with caplog.at_level(logging.INFO, logger="azclaw"):
        assert client.chat(HI).text == "hi"
        assert client.chat(HI).text == "hi"
    assert [r.body["model"] for r in fake.chats] == ["default", "Qwen/Qwen3-8B", "Qwen/Qwen3-8B"]
    assert caplog.text.count("does not know the model 'default'") == 1 and "Qwen/Qwen3-8B" in caplog.text


def test_a_server_with_several_models_and_none_named_default_is_an_error_listing_them(fake_llm):
    fake = fake_llm(responder=lambda r: model_not_found("ollama"),
                    models=[{"id": "qwen3:8b"}, {"id": "llama3.2:3b"}])
    with pytest.raises(EndpointError) as info:
        LLMClient(fake.url).chat(HI)
    assert "qwen3:8b" in str(info.value) and "llama3.2:3b" in str(info.value) and "--model" in str(info.value)
    assert len(fake.chats) == 1


def test_a_named_model_that_is_not_served_stays_an_error(fake_llm):
    fake = fake_llm(responder=lambda r: model_not_found("vllm", model="gpt-4"), models=[{"id": "qwen"}])
    with pytest.raises(EndpointError) as info:
        LLMClient(fake.url, model="gpt-4").chat(HI)
    assert "gpt-4" in str(info.value) and len(fake.chats) == 1


# -- the model name, checked before a run -------------------------------------------------

def test_check_model_refuses_a_name_the_server_does_not_list_naming_what_it_serves(fake_llm):
    fake = fake_llm(models=[{"id": "Qwen/Qwen3-8B", "owned_by": "vllm"}, {"id": "Qwen/Qwen3-14B", "owned_by": "vllm"}])
    with pytest.raises(ConfigError) as info:
        LLMClient(fake.url, model="qwen3").check_model()
    message = str(info.value)
    assert message.startswith(f"model 'qwen3': {fake.base} does not serve it; it serves: Qwen/Qwen3-8B, Qwen/Qwen3-14B")
    assert "\n" not in message and not fake.chats


@pytest.mark.parametrize("models, model", [
    ([{"id": "qwen3"}], "qwen3"),
    ([{"id": "qwen3:latest", "owned_by": "library"}], "qwen3"),  # Ollama: NAME is NAME:latest
    ([{"id": "/models/qwen.gguf", "owned_by": "llamacpp"}], "anything"),  # llama-server: one model, any name
    ([{"id": "local", "owned_by": "me"}, {"id": "other", "owned_by": "me"}], "anything"),  # llama-cpp-python
    ([{"id": "Qwen/Qwen3-8B"}], "default"),  # the first request takes the one model's name
    ([], "anything"),  # lists nothing: not judged
])
def test_check_model_passes_servers_that_take_the_name(fake_llm, models, model):
    fake = fake_llm(models=models)
    LLMClient(fake.url, model=model).check_model()


def test_check_model_passes_a_server_without_a_model_list(fake_llm):
    fake = fake_llm(routes={"/v1/models": (404, {"error": "not found"})})
    LLMClient(fake.url, model="anything").check_model()


def test_check_model_refuses_default_where_several_models_are_listed(fake_llm):
    fake = fake_llm(models=[{"id": "qwen3:8b", "owned_by": "library"}, {"id": "llama3.2:3b", "owned_by": "library"}])
    with pytest.raises(ConfigError, match="several models and none is named 'default'; it serves: qwen3:8b, llama3.2:3b"):
        LLMClient(fake.url).check_model()


def test_a_run_with_a_wrong_model_stops_before_round_one_with_one_line_listing_the_models(fake_llm, azclaw):
    fake = fake_llm(models=[{"id": "Qwen/Qwen3-8B", "owned_by": "vllm"}])
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--max-rounds", "3", "--model", "qwen-3-8b")
    line = assert_one_error_line(proc, "'qwen-3-8b'", "Qwen/Qwen3-8B", fake.base)
    assert "does not serve it" in line
    assert not fake.chats, "no round was run"


def test_response_format_and_tool_choice_are_passed_through(fake_llm):
    schema = {"type": "json_schema", "json_schema": {"name": "step", "schema": {"type": "object"}}}
    fake = fake_llm()
    tools = [{"type": "function", "function": {"name": "recall"}}]
    LLMClient(fake.url).chat(HI, tools, response_format=schema, tool_choice="required")
    LLMClient(fake.url).chat(HI, response_format=schema)
    first, second = fake.chats
    assert first.body["response_format"] == schema and first.body["tool_choice"] == "required"
    assert second.body["response_format"] == schema and "tool_choice" not in second.body
