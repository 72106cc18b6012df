"""Fact consolidation, model-free: does recall give the current value first?

In the style of MemoryAgentBench's fact consolidation. Three agents store
facts over 200 rounds among 2,000 other memories; a third of the facts
change later, some twice. Each store is worded the way models write: the
same title again, a reworded title, or none; "Port: 8443", "The API port
is 8443.", "Changed the API server port to 7070 (was 8443)." Queries are
phrased as a model asks them ("what port does the api server use",
"database engine"). Measured per query, on what recall shows first: the
current value at rank 1 (goal >= 95%), a stale value at rank 1 (goal <= 5%),
and the latency of the whole recall (memories and the rounds' messages).

    python tests/bench_recall.py                  # 5 seeds, 200 rounds, 2,000 other memories
    python tests/bench_recall.py --seeds 1 --others 500
    python tests/bench_recall.py --plain          # also without the subject rule, for comparison

Not collected by pytest (bench_*, not test_*); tests/test_memory.py runs a
small version of it (``run`` with fewer memories).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from azclaw.memory import TeamMemory  # noqa: E402
from bench_memory import DOMAIN, Corpus  # noqa: E402

AGENTS = ("architect", "developer", "reviewer")
ROUND = timedelta(minutes=7)  # simulated time between rounds


def ports(rng):
    return str(rng.randrange(1100, 65000))


def pick(*values):
    return lambda rng: rng.choice(values)


def durations(unit, low, high):
    return lambda rng: f"{rng.randrange(low, high)} {unit}"


# (phrases: the first is the canonical one; queries; a value maker)
SUBJECTS = [
    (["API server port", "port of the API server", "API port"],
     ["what port does the api server use", "api server port"], ports),
    (["metrics port", "Prometheus metrics port", "port for metrics"],
     ["which port serves the metrics", "metrics port"], ports),
    (["admin console port", "port of the admin console"], ["admin console port", "what port is the admin console on"],
     ports),
    (["websocket port", "port for websocket connections"], ["websocket port", "which port do websockets use"], ports),
    (["database engine", "primary database", "database"], ["which database do we use", "database choice"],
     pick("SQLite", "PostgreSQL", "MySQL", "MariaDB", "CockroachDB", "DuckDB")),
    (["test database", "database for the tests"], ["which database do the tests use", "test database"],
     pick("an in-memory SQLite", "a throwaway PostgreSQL container", "DuckDB files", "a shared staging database")),
    (["database backup time", "nightly database backup", "backup schedule"],
     ["when does the database backup run", "backup time"], pick("01:00 UTC", "02:30 UTC", "03:15 UTC", "04:00 UTC")),
    (["connection pool size", "database pool size", "size of the connection pool"],
     ["how big is the connection pool", "connection pool size"], lambda rng: f"{rng.randrange(4, 64)} connections"),
    (["HTTP request timeout", "request timeout", "timeout for HTTP requests"],
     ["http request timeout", "how long before an http request times out"], durations("seconds", 2, 90)),
    (["session timeout", "session expiry", "idle session timeout"], ["when do sessions expire", "session timeout"],
     durations("minutes", 5, 240)),
    (["background job timeout", "job timeout", "timeout of background jobs"],
     ["background job timeout", "how long may a background job run"], durations("minutes", 1, 120)),
    (["Python version", "minimum Python version", "Python we target"], ["which python version", "python version"],
     pick("Python 3.9", "Python 3.10", "Python 3.11", "Python 3.12", "Python 3.13")),
    (["Node version", "Node.js version"], ["which node version", "node.js version"],
     pick("Node 18", "Node 20", "Node 22", "Node 23")),
    (["API version prefix", "version prefix of the API", "API versioning"],
     ["api version prefix", "how are api versions named"], pick("/v1", "/v2", "/api/v3", "/2024-01")),
    (["CI provider", "continuous integration service", "CI system"], ["which ci do we use", "ci provider"],
     pick("GitHub Actions", "GitLab CI", "Buildkite", "CircleCI", "Jenkins")),
    (["container registry", "registry for container images", "image registry"],
     ["where do container images go", "container registry"], pick("GHCR", "Docker Hub", "Quay", "Harbor", "ECR")),
    (["logging library", "library for logging", "logger"], ["which logging library", "logging library"],
     pick("structlog", "loguru", "the standard logging module", "zap", "pino")),
    (["web framework", "HTTP framework", "framework for the web API"], ["which web framework", "web framework choice"],
     pick("FastAPI", "Flask", "Django", "Starlette", "Litestar")),
    (["ORM", "object relational mapper", "database access layer"], ["which orm", "database access layer"],
     pick("SQLAlchemy", "Peewee", "Tortoise", "raw SQL with psycopg", "SQLModel")),
    (["test runner", "test framework", "tool that runs the tests"], ["which test runner", "test framework"],
     pick("pytest", "unittest", "nose2", "ward")),
    (["frontend framework", "UI framework", "framework for the dashboard"],
     ["frontend framework", "which framework is the dashboard built with"],
     pick("React", "Svelte", "Vue", "Solid", "htmx")),
    (["CSS framework", "styling library", "CSS library"], ["css framework", "which css library"],
     pick("Tailwind", "Bootstrap", "Bulma", "plain CSS modules", "Pico")),
    (["auth provider", "identity provider", "login provider"], ["auth provider", "who provides the login"],
     pick("Auth0", "Keycloak", "Okta", "our own OAuth server", "Cognito")),
    (["email provider", "transactional email service", "mail provider"], ["which email provider", "email service"],
     pick("Postmark", "Mailgun", "SendGrid", "Amazon SES", "Resend")),
    (["hosting provider", "where production runs", "cloud provider"], ["hosting provider", "where does production run"],
     pick("Hetzner", "AWS", "Fly.io", "DigitalOcean", "Render")),
    (["message queue", "queue broker", "broker for background jobs"], ["which message queue", "queue broker"],
     pick("RabbitMQ", "Redis streams", "Kafka", "NATS", "SQS")),
    (["cache store", "cache backend", "caching layer"], ["cache backend", "what do we cache in"],
     pick("Redis", "Memcached", "an in-process LRU", "Valkey", "KeyDB")),
    (["search engine", "full-text search backend", "search backend"], ["search backend", "which search engine"],
     pick("Elasticsearch", "Meilisearch", "Typesense", "OpenSearch", "PostgreSQL full-text")),
    (["package manager", "Python package manager", "dependency tool"],
     ["package manager", "which package manager do we use"],
     pick("uv", "pip-tools", "Poetry", "PDM", "Hatch")),
    (["linter", "lint tool", "code linter"], ["which linter", "lint tool"],
     pick("ruff", "flake8", "pylint", "ruff with the bugbear rules")),
    (["rate limit", "API rate limit", "request rate limit"], ["rate limit", "how many requests per minute"],
     lambda rng: f"{rng.randrange(20, 2000)} requests per minute"),
    (["maximum upload size", "upload size limit", "largest upload"], ["max upload size", "how big can an upload be"],
     lambda rng: f"{rng.randrange(2, 500)} MB"),
    (["retry count", "number of retries", "max retries"], ["how many retries", "retry count"],
     lambda rng: f"{rng.randrange(1, 9)} retries"),
    (["page size", "default page size", "items per page"], ["page size", "how many items per page"],
     lambda rng: f"{rng.randrange(10, 200)} items"),
    (["minimum password length", "password length", "shortest password"],
     ["minimum password length", "how long must passwords be"], lambda rng: f"{rng.randrange(8, 24)} characters"),
    (["deploy day", "day we deploy", "deployment day"], ["which day do we deploy", "deploy day"],
     pick("Monday", "Tuesday", "Wednesday", "Thursday")),
    (["release date", "launch date", "date of the release"], ["when is the release", "release date"],
     pick("3 March", "10 March", "21 April", "2 June", "15 July")),
    (["standup time", "daily standup", "time of the standup"], ["when is standup", "standup time"],
     pick("09:00", "09:30", "10:15", "11:00")),
    (["project codename", "codename", "internal project name"], ["project codename", "what is the codename"],
     pick("Echidna", "Quokka", "Numbat", "Wombat", "Bilby", "Dingo")),
    (["release manager", "person who runs releases", "release owner"], ["who is the release manager", "release owner"],
     pick("Alice", "Bram", "Chen", "Dana", "Emeka")),
]

FIRST = ["{P}: {v}", "The {p} is {v}.", "We decided that the {p} is {v}.", "{P} set to {v}.",
         "Use {v} as the {p}.", "Decision: the {p} will be {v}, agreed in review."]
CHANGED = ["Changed the {p} to {v}.", "Update: the {p} is now {v} (was {old}).",
           "{P} is now {v} instead of {old}, because {why}.", "We switched the {p} from {old} to {v}.",
           "{P}: {v} (changed from {old}).", "New decision on the {p}: {v}. {old} is no longer used."]
WHY = ["the old one clashed with another service", "it was too slow under load", "the reviewer found a problem",
       "ops asked for it", "it fits the deployment better", "the tests were flaky with the old one"]
# other memories that share words with the facts: the confusers a real project has
OTHER = [("review-{a}", "Reviewed the {a} code: the {b} handler needs a test for the {c} case."),
         ("bug-{a}-{b}", "Bug: the {a} {b} leaks a {c} when the request is cancelled."),
         ("discussion-{a}", "Talked about the {a} and the {b}; nothing decided yet about the {c}."),
         ("todo-{a}-docs", "TODO: document how the {a} talks to the {b}."),
         ("{a}-logging", "The {a} module now logs every {b} with its {c}."),
         ("benchmark-{a}", "Benchmark: the {a} handles 1200 {b} per second with the {c} warm.")]
# the words they mention: the project's words, among them those of the facts
OTHER_WORDS = sorted(set(DOMAIN) | set("server port database backup timeout session job version api framework queue "
                                       "cache search release deploy test runner upload password page retry limit "
                                       "console metrics websocket container registry provider library engine pool "
                                       "connection schedule".split()))


def slug(phrase: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", phrase.lower()).strip("-")


@dataclass
class Fact:
    phrases: list[str]
    queries: list[str]
    versions: list[tuple[str, str, str, str]] = field(default_factory=list)  # (agent, title, text, value)
    titles: list[str] = field(default_factory=list)  # how each version was titled: first/same/reworded/none
    given: list[str] = field(default_factory=list)  # the title each version was given ("" for none)


def store_facts(memory: TeamMemory, rng: random.Random, rounds: int, start: datetime) -> tuple[list[Fact], dict]:
    """Store the facts, a third changed once or twice; returns them and
    (agent, title, text) -> (fact index, version)."""
    plan = []
    for i, (phrases, queries, value) in enumerate(SUBJECTS):
        first = rng.randrange(1, rounds // 2)
        times = [first]
        if rng.random() < 1 / 3:
            times.append(rng.randrange(first + 5, rounds - 20))
            if rng.random() < 1 / 3:
                times.append(rng.randrange(times[-1] + 3, rounds))
        plan += [(r, i, n) for n, r in enumerate(times)]
    facts = [Fact(list(p), list(q)) for p, q, _ in SUBJECTS]
    where: dict = {}
    for round_no, i, n in sorted(plan):
        fact, make = facts[i], SUBJECTS[i][2]
        agent = rng.choice(AGENTS)
        value = make(rng)
        while any(value == v[3] for v in fact.versions):
            value = make(rng)
        phrase = rng.choice(fact.phrases)
        if n == 0:
            style, title = "first", slug(rng.choice(fact.phrases)) if rng.random() < 0.8 else ""
            text = rng.choice(FIRST)
        else:
            style = rng.choice(["same", "reworded", "none"])
            last = next((t for t in reversed(fact.given) if t), slug(fact.phrases[0]))
            others = [slug(p) for p in fact.phrases if slug(p) != last] or [last + "-decision"]
            title = {"same": last, "reworded": rng.choice(others), "none": ""}[style]
            text = rng.choice(CHANGED)
        old = fact.versions[-1][3] if fact.versions else ""
        text = text.format(p=phrase, P=phrase[0].upper() + phrase[1:], v=value, old=old, why=rng.choice(WHY))
        at = start + round_no * ROUND + timedelta(seconds=rng.randrange(0, 300))
        stored = memory.remember(agent, text, title, round=round_no, at=at)
        fact.versions.append((agent, stored.title, text, value))
        fact.given.append(title)
        fact.titles.append(style)
        where[(agent, stored.day, stored.title, text)] = (i, n)
    return facts, where


def store_others(memory: TeamMemory, rng: random.Random, count: int, rounds: int, start: datetime) -> None:
    corpus = Corpus(seed=rng.randrange(10**6))
    for k in range(count):
        round_no = rng.randrange(1, rounds + 1)
        at = start + round_no * ROUND + timedelta(seconds=rng.randrange(0, 400))
        if k % 2:
            title, text = corpus.memory(k)
        else:
            a, b, c = rng.sample(OTHER_WORDS, 3)
            title, text = (t.format(a=a, b=b, c=c) for t in rng.choice(OTHER))
            title = f"{title}-{k}" if rng.random() < 0.7 else ""
        memory.remember(rng.choice(AGENTS), text, title, round=round_no, at=at)


def archive_rounds(memory: TeamMemory, rng: random.Random, rounds: int) -> None:
    corpus = Corpus(seed=rng.randrange(10**6))
    for round_no in range(1, rounds + 1):
        memory.archive_round(round_no, [(a, " ".join(corpus.sentence() for _ in range(8))) for a in AGENTS])


def run(seed: int = 1, rounds: int = 200, others: int = 2000, plain: bool = False) -> dict:
    """One seed: returns per-query outcomes and latencies."""
    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="azclaw-recall-"))
    try:
        memory = TeamMemory({a: base / "agents" / a for a in AGENTS})
        start = datetime.now().replace(microsecond=0) - rounds * ROUND - timedelta(days=1)
        store_others(memory, rng, others, rounds, start)
        facts, where = store_facts(memory, rng, rounds, start)
        archive_rounds(memory, rng, rounds)
        from azclaw.memory import team
        grouping = team.newest_first
        if plain:  # bm25 and the newer on a tie only: what recall did before subjects
            team.newest_first = lambda hits, *args: [(h, None) for h in hits]
        memory.recall("warm up")
        outcomes, latencies = [], []
        for i, fact in enumerate(facts):
            for query in fact.queries:
                t = time.perf_counter()
                memory.recall(query)
                latencies.append((time.perf_counter() - t) * 1000)
                hits, pool = memory.hits(query), memory.hits(query, limit=25)  # what recall shows; more
                found = [where.get((h.memory.agent, h.memory.day, h.memory.title, h.latest.text)) for h in hits]
                deeper = [where.get((h.memory.agent, h.memory.day, h.memory.title, h.latest.text)) for h in pool]
                current = (i, len(fact.versions) - 1)
                top = found[0] if found else None
                outcome = "current" if top == current else "stale" if top and top[0] == i else "other"
                wrongly_older = sum(1 for f, h in zip(deeper, pool) if f and h.newer is not None
                                    and f[1] == len(facts[f[0]].versions) - 1)
                stale_shown = [h for f, h in zip(found, hits) if f and f[0] == i and f != current]
                outcomes.append({"fact": i, "changes": len(fact.versions) - 1, "style": fact.titles[-1],
                                 "outcome": outcome, "in_top5": current in found,
                                 "stale_shown": len(stale_shown),
                                 "stale_marked": sum(1 for h in stale_shown if h.newer is not None),
                                 "wrongly_older": wrongly_older, "query": query,
                                 "top": hits[0].latest.text if hits else ""})
        memory.close()
        team.newest_first = grouping
        return {"outcomes": outcomes, "latencies": latencies}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def share(rows: list[dict], outcome: str) -> str:
    return f"{sum(r['outcome'] == outcome for r in rows) / len(rows):6.1%}" if rows else "     -"


def report(results: list[dict], label: str, show_misses: bool) -> None:
    rows = [o for r in results for o in r["outcomes"]]
    latencies = [x for r in results for x in r["latencies"]]
    print(f"\n{label}")
    print(f"{'facts':<28} {'queries':>7} | {'current at 1':>12} | {'stale at 1':>10} | {'other at 1':>10} | "
          f"{'current in top 5':>16}")
    groups = [("all", rows), ("never changed", [r for r in rows if r["changes"] == 0]),
              ("changed once", [r for r in rows if r["changes"] == 1]),
              ("changed twice", [r for r in rows if r["changes"] == 2]),
              ("  last change: same title", [r for r in rows if r["changes"] and r["style"] == "same"]),
              ("  last change: reworded", [r for r in rows if r["changes"] and r["style"] == "reworded"]),
              ("  last change: no title", [r for r in rows if r["changes"] and r["style"] == "none"])]
    for name, group in groups:
        top5 = f"{sum(r['in_top5'] for r in group) / len(group):16.1%}" if group else "               -"
        print(f"{name:<28} {len(group):>7} | {share(group, 'current'):>12} | {share(group, 'stale'):>10} | "
              f"{share(group, 'other'):>10} | {top5}")
    shown = sum(r["stale_shown"] for r in rows)
    marked = sum(r["stale_marked"] for r in rows)
    wrong = sum(r["wrongly_older"] for r in rows)
    found = [r for r in rows if r["outcome"] != "other"]
    print(f"when a version of the fact is at rank 1, the current one: "
          f"{sum(r['outcome'] == 'current' for r in found) / max(1, len(found)):.1%} ({len(found)} queries)")
    print(f"stale versions shown in the top 5: {shown}, marked older: {marked} ({marked / max(1, shown):.0%}); "
          f"current versions marked older in the top 25: {wrong}")
    print(f"recall latency (memories + messages, rendered): median {statistics.median(latencies):.2f} ms, "
          f"p95 {sorted(latencies)[int(0.95 * len(latencies))]:.2f} ms, {len(latencies)} recalls")
    if show_misses:
        for r in rows:
            if r["outcome"] != "current":
                print(f"  {r['outcome']}: {r['query']!r} -> {r['top'][:90]!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--others", type=int, default=2000)
    parser.add_argument("--plain", action="store_true", help="also measure without the subject rule")
    parser.add_argument("--misses", action="store_true", help="list the queries that missed")
    args = parser.parse_args(argv)
    label = (f"Fact consolidation: {len(SUBJECTS)} facts (about a third changed, some twice) among "
             f"{args.others:,} other memories, {args.rounds} rounds, 3 agents; {args.seeds} seeds")
    results = [run(seed, args.rounds, args.others) for seed in range(1, args.seeds + 1)]
    report(results, label + "\nrecall (the newest of a subject first):", args.misses)
    if args.plain:
        plain = [run(seed, args.rounds, args.others, plain=True) for seed in range(1, args.seeds + 1)]
        report(plain, "bm25 with the newer on a tie only (no subjects):", args.misses)


if __name__ == "__main__":
    main()
