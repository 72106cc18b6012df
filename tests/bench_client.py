"""Measure the LLM client by hand (not part of the test suite)::

    python tests/bench_client.py

1. the reply parser on adversarial replies of about 1 MB (the old regexes
   were cubic or quadratic on these: minutes to hours);
2. the time of one request to a local scripted server: a bare urllib loop,
   azclaw plain, azclaw streamed (median and 95th percentile of 300).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakellm import FakeLLM  # noqa: E402
from test_client_textcalls import ADVERSARIAL  # noqa: E402

from azclaw.client import LLMClient  # noqa: E402
from azclaw.client.textcalls import parse_text_calls, strip_thinking  # noqa: E402

HI = [{"role": "user", "content": "hi"}]


def parser() -> None:
    print("parser on adversarial replies:")
    for name, reply in ADVERSARIAL.items():
        start = time.perf_counter()
        parse_text_calls(strip_thinking(reply))
        print(f"  {name:<36} {len(reply) / 1e6:5.2f} MB  {(time.perf_counter() - start) * 1000:8.1f} ms")


def requests(n: int = 300) -> None:
    print(f"one request to a scripted server on 127.0.0.1 ({n} each):")
    with FakeLLM(default="ok " * 50) as fake:
        body = json.dumps({"messages": HI}).encode()
        plain, streamed = LLMClient(fake.url, stream=False), LLMClient(fake.url)

        def bare():
            req = urllib.request.Request(fake.url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req) as resp:
                json.loads(resp.read())
        for label, fn in (("bare urllib", bare), ("azclaw plain", lambda: plain.chat(HI)),
                          ("azclaw streamed", lambda: streamed.chat(HI))):
            times = []
            for _ in range(n):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1000)
            times.sort()
            print(f"  {label:<16} median {statistics.median(times):6.2f} ms   p95 {times[int(n * 0.95)]:6.2f} ms")


if __name__ == "__main__":
    parser()
    requests()
