"""Benchmark of team memory at 1,000 / 10,000 / 100,000 memories. Run by hand:

    python tests/bench_memory.py                 # N = 1,000 10,000 100,000
    python tests/bench_memory.py 1000 10000      # chosen sizes
    python tests/bench_memory.py --no-watch 100000   # without inotify (stat polling)

For each N it writes N memories over many days and three agents in a temp
folder, then, each in a fresh process: builds the index from nothing (cold
build), runs 200 turns of remember + recall(query) (+ an empty recall every
tenth turn), and restarts to time the first recall against the existing
index (cold start). Peak RSS is that of the measuring process. Then it times
turns while up to 50,000 memories are planted by hand into today's folder,
and scores the ranking on a labelled set: queries with the memory that
should come first.
Not collected by pytest (bench_*, not test_*).
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from azclaw.memory import MemoryRoot, TeamMemory, query_terms  # noqa: E402

AGENTS = ("architect", "developer", "reviewer")
TURNS = 200
DOMAIN = """api auth token session cache database schema migration index query latency timeout retry
queue worker scheduler cron job deploy release rollback pipeline build test fixture mock coverage
lint format style review merge branch commit tag version semver changelog config env secret key
vault certificate tls https proxy gateway router endpoint handler middleware request response json
yaml csv parser lexer compiler runtime memory leak profile benchmark throughput cpu thread process
lock mutex race deadlock async await future promise callback event stream kafka redis postgres
sqlite mysql mongo elastic search ranking bm25 vector embedding model prompt agent tool recall
remember orchestrator round phase checkpoint journal log metric trace alert dashboard grafana
prometheus docker kubernetes helm terraform ansible nginx apache linux kernel filesystem inode
backup restore snapshot replica shard partition consistency transaction isolation rollback audit
permission role user admin tenant billing invoice payment stripe webhook email notification sms
frontend backend react vue css html layout component state store reducer hook render accessibility
mobile android ios offline sync conflict merge diff patch upload download storage bucket s3 cdn
""".split()
COMMON = """use make run need fix add change file check work time new old first last next good bad small
large fast slow simple hard easy part case way step plan idea team code data list item value name type
number field table page form line error issue bug problem result output input default option setting
keep move start stop open close read write send get set call return wait try fail pass show hide find
choose decide agree note ask answer review update remove create delete copy build ship test store load
save clean split join sort limit allow block support handle own share follow lead""".split()
FILLER = "the a to of and is we for in on with that it this be as by at from will should not".split()


def zipf_sampler(words: list[str], rng: random.Random):
    weights = [1 / (i + 1) ** 0.9 for i in range(len(words))]
    return lambda k: rng.choices(words, weights=weights, k=k)


def make_vocab(rng: random.Random) -> list[str]:
    syllables = ["ka", "lo", "mi", "ren", "tu", "vax", "zor", "pel", "quin", "dra", "sul", "mo", "fen", "gri"]
    tail = {"".join(rng.choices(syllables, k=rng.randint(2, 3))) for _ in range(4000)}
    head = DOMAIN + COMMON
    rng.shuffle(head)
    return head + sorted(tail - set(head))  # project words are the frequent ones


class Corpus:
    """Deterministic memories: Zipf-distributed project words and filler."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.pick = zipf_sampler(make_vocab(self.rng), self.rng)

    def sentence(self) -> str:
        words = [self.rng.choice(FILLER) if self.rng.random() < 0.4 else self.pick(1)[0]
                 for _ in range(self.rng.randint(6, 16))]
        return " ".join(words).capitalize() + "."

    def memory(self, i: int) -> tuple[str, str]:
        title = "-".join(self.pick(self.rng.randint(2, 3))) + f"-{i}"
        return title, " ".join(self.sentence() for _ in range(self.rng.randint(1, 5)))

    def query(self) -> str:
        return " ".join(self.pick(self.rng.randint(2, 4)))


def generate(base: Path, n: int, seed: int = 1) -> dict[str, Path]:
    """Write ``n`` memories straight into AgentAZAll folders, ~100 a day."""
    roots = {a: base / "agents" / a for a in AGENTS}
    mailboxes = {a: MemoryRoot.prepare(a, r).mailbox for a, r in roots.items()}
    corpus, first = Corpus(seed), date.today() - timedelta(days=max(10, n // 100))
    days = [(first + timedelta(days=d)).isoformat() for d in range(max(10, n // 100))]
    made: set[Path] = set()
    for i in range(n):
        folder = mailboxes[corpus.rng.choice(AGENTS)] / corpus.rng.choice(days) / "remember"
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        title, text = corpus.memory(i)
        (folder / f"{title}.txt").write_text(text, encoding="utf-8")
    return roots


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def child_build(base: Path, n: int, watch: bool) -> dict:
    """Cold build, then the turns."""
    roots = {a: base / "agents" / a for a in AGENTS}
    corpus = Corpus(seed=n + 7)
    t0 = time.perf_counter()
    memory = TeamMemory(roots, watch=watch)
    memory.recall(corpus.query())
    build = time.perf_counter() - t0
    rem, rec, idx, titles = [], [], [], []
    for turn in range(TURNS):
        agent = corpus.rng.choice(AGENTS)
        title, text = corpus.memory(n + turn)
        if titles and corpus.rng.random() < 0.2:
            agent, title = corpus.rng.choice(titles)  # the same title again: an append
        titles.append((agent, title))
        t = time.perf_counter()
        memory.remember(agent, text, title)
        rem.append(time.perf_counter() - t)
        t = time.perf_counter()
        memory.recall(corpus.query())
        rec.append(time.perf_counter() - t)
        if turn % 10 == 0:
            t = time.perf_counter()
            memory.recall("")
            idx.append(time.perf_counter() - t)
    return {"build_s": build, "remember_ms": [x * 1000 for x in rem], "recall_ms": [x * 1000 for x in rec],
            "index_ms": [x * 1000 for x in idx], "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "counts": memory.counts()}


def child_start(base: Path, n: int, watch: bool) -> dict:
    """A restart: the first recall validates the existing index."""
    roots = {a: base / "agents" / a for a in AGENTS}
    t0 = time.perf_counter()
    memory = TeamMemory(roots, watch=watch)
    memory.recall("deploy rollback")
    start = time.perf_counter() - t0
    return {"start_s": start, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(mode: str, base: Path, n: int, watch: bool) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(base), str(n), str(int(watch))],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def bench(sizes: list[int], watch: bool) -> None:
    print(f"Team memory benchmark ({'inotify' if watch else 'stat polling'}), {TURNS} turns per size")
    empty = 'recall("") ms'
    header = (f"{'N':>8} | {'remember ms':>15} | {'recall ms':>15} | {empty:>14} | "
              f"{'cold build s':>12} | {'cold start s':>12} | {'peak RSS MB':>11}")
    print(header)
    print(f"{'':>8} | {'median    p95':>15} | {'median    p95':>15} | {'median':>14} |")
    print("-" * len(header))
    for n in sizes:
        base = Path(tempfile.mkdtemp(prefix=f"azclaw-bench-{n}-"))
        try:
            t = time.perf_counter()
            generate(base, n)
            gen = time.perf_counter() - t
            built = run_child("build", base, n, watch)
            started = run_child("start", base, n, watch)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        rem, rec = built["remember_ms"], built["recall_ms"]
        print(f"{n:>8,} | {statistics.median(rem):6.2f} {pct(rem, .95):7.2f} | "
              f"{statistics.median(rec):6.2f} {pct(rec, .95):7.2f} | {statistics.median(built['index_ms']):14.2f} | "
              f"{built['build_s']:12.2f} | {started['start_s']:12.2f} | "
              f"{max(built['rss_mb'], started['rss_mb']):11.0f}   (generated in {gen:.0f} s)", flush=True)


# -- ranking quality -----------------------------------------------------------------
# agent, title, days ago, text (a line that starts with spaces goes on with the text above);
# the queries below name the title that should come first. Of the two release-date memories the newer,
# in the same wording, must win.
LABELLED_TABLE = """
architect database-choice          40  We chose PostgreSQL 16 for user data; SQLite only for tests.
architect session-storage          35  Sessions are stored in Redis with a 30 minute sliding expiry.
developer password-hashing         30  Passwords are hashed with argon2id, memory cost 64 MB, 3 iterations.
reviewer  sql-injection-finding    12  The search endpoint built SQL by string concatenation; fixed with bound
                                       parameters in PR 212.
architect api-versioning           50  Public API versions go in the URL path (/v1/, /v2/); headers are not
                                       used.
developer logging-format           20  Logs are JSON lines with ts, level, msg and request_id fields.
developer retry-policy             18  HTTP calls retry three times with exponential backoff starting at 200
                                       ms and jitter; never retry a POST without an idempotency key.
architect message-queue            60  Background jobs go through RabbitMQ; Kafka was rejected as too heavy
                                       for our volume.
reviewer  test-coverage-rule       25  Every pull request keeps line coverage at or above 85 percent.
developer frontend-framework       45  The dashboard is written in Svelte; we dropped the React prototype.
architect deployment-target        55  Production runs on two Hetzner machines behind Caddy, no Kubernetes.
developer timezone-handling        15  Store every timestamp in UTC; convert to the user's zone only in the
                                       UI.
reviewer  race-condition-uploads    8  Two uploads of the same file raced on the temp name; now each upload
                                       gets a uuid4 temp file.
architect auth-tokens              33  Access tokens are JWTs valid 15 minutes; refresh tokens last 30 days
                                       and rotate on use.
developer config-loading           28  Configuration comes from environment variables first, then config.toml.
reviewer  naming-convention        22  Functions use snake_case verbs; classes are nouns in CamelCase.
architect backup-schedule          38  Nightly pg_dump at 02:00 UTC to object storage; keep 14 days.
developer email-provider           26  Transactional email is sent through Postmark; Mailgun is the fallback.
reviewer  dependency-policy        14  New third-party packages need a second reviewer and a licence check.
architect rate-limiting            31  Each API key may make 100 requests per minute; the limiter is a token
                                       bucket in Redis.
developer pagination               17  List endpoints use cursor pagination with an opaque base64 cursor; no
                                       offsets.
reviewer  error-messages           11  User-facing error messages say what failed and what to do next; no
                                       stack traces.
architect release-date              9  Version 2 ships on 3 March.
architect release-date              2  Version 2 ships on 10 March.
developer feature-flags            19  Feature flags live in the flags table and are read once per request.
"""


def table(text: str) -> list[tuple[str, str, str, int]]:
    rows: list[list] = []
    for line in text.strip("\n").splitlines():
        if line.startswith(" "):
            rows[-1][2] += " " + line.strip()
        else:
            agent, title, days, words = line.split(maxsplit=3)
            rows.append([agent, title, words, int(days)])
    return [tuple(r) for r in rows]


LABELLED = table(LABELLED_TABLE)
DISTRACTORS = [
    ("developer", "standup-notes", "Talked about the database migration, the session cleanup and tokens in "
                                   "general; nothing decided yet about any database.", 3),
    ("reviewer", "review-backlog", "Backlog: logging, retry, email, pagination, backup and timezone tickets "
                                   "all waiting for review.", 4),
    ("developer", "meeting-log", "Long meeting. " + "We discussed format of many things. " * 20, 5),
]
QUERIES = [
    ("which database did we choose", "database-choice"),
    ("where are sessions stored", "session-storage"),
    ("how are passwords hashed", "password-hashing"),
    ("sql injection in search endpoint", "sql-injection-finding"),
    ("api version in url or header", "api-versioning"),
    ("logging format", "logging-format"),
    ("how many retries and backoff", "retry-policy"),
    ("kafka or rabbitmq for background jobs", "message-queue"),
    ("minimum test coverage for a pull request", "test-coverage-rule"),
    ("svelte or react for the dashboard", "frontend-framework"),
    ("do we deploy on kubernetes", "deployment-target"),
    ("timestamps timezone utc", "timezone-handling"),
    ("upload race condition", "race-condition-uploads"),
    ("how long are access tokens valid", "auth-tokens"),
    ("environment variables or config file", "config-loading"),
    ("naming convention for functions and classes", "naming-convention"),
    ("when do backups run", "backup-schedule"),
    ("which email provider", "email-provider"),
    ("adding a third-party dependency", "dependency-policy"),
    ("requests per minute limit", "rate-limiting"),
    ("cursor or offset pagination", "pagination"),
    ("what should error messages say", "error-messages"),
    ("when does version 2 ship", "release-date@2"),
    ("feature flags", "feature-flags"),
]


def plant(memory: TeamMemory, rows: list) -> None:
    import os
    for agent, title, text, ago in rows:
        day = (date.today() - timedelta(days=ago)).isoformat()
        folder = memory.roots[agent].mailbox / day / "remember"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{title}.txt").write_text(text, encoding="utf-8")
        stamp = time.time() - ago * 86400
        os.utime(folder / f"{title}.txt", (stamp, stamp))


def substring_baseline(memory: TeamMemory, query: str) -> str:
    """The approach this replaced: count query words found as substrings."""
    words = query_terms(query)
    best = None
    for rank, m in enumerate(memory.memories()):
        body, title = m.text().lower(), m.title.lower().replace("_", " ")
        score = sum(2 * (w in title) + (w in body) for w in words)
        if score and (best is None or score > best[0]):
            best = (score, m)
    return best[1].title + "@" + best[1].day if best else ""


def ranking(background: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="azclaw-rank-"))
    try:
        roots = generate(base, background, seed=99)
        memory = TeamMemory(roots)
        plant(memory, LABELLED + DISTRACTORS)
        newer_release = (date.today() - timedelta(days=2)).isoformat()
        top1 = top3 = rr = base_top1 = 0
        misses = []
        for query, expected in QUERIES:
            want_day = newer_release if expected.endswith("@2") else None
            want = expected.split("@")[0]
            hits = [(m.title, m.day) for m, _ in memory.search(query, limit=10)]
            ranks = [i for i, (t, d) in enumerate(hits) if t == want and (want_day is None or d == want_day)]
            if ranks:
                top1 += ranks[0] == 0
                top3 += ranks[0] < 3
                rr += 1 / (ranks[0] + 1)
            if not ranks or ranks[0]:
                misses.append(f"    {query!r}: expected {want}, got {hits[:3]}")
            got = substring_baseline(memory, query)
            base_top1 += got.split("@")[0] == want and (want_day is None or got.endswith(want_day))
        k = len(QUERIES)
        print(f"\nRanking quality: {k} labelled queries, {len(LABELLED) + len(DISTRACTORS)} planted memories "
              f"among {background:,} generated ones")
        print(f"  bm25 recall:   top-1 {top1}/{k} = {top1 / k:.0%}, top-3 {top3 / k:.0%}, MRR {rr / k:.2f}")
        print(f"  substring baseline (the previous recall): top-1 {base_top1}/{k} = {base_top1 / k:.0%}")
        for line in misses:
            print(line)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def flatness(step: int = 10_000, top: int = 50_000, watch: bool = True) -> None:
    """Memories planted by hand into today's folder between turns, as the CLI
    would put them: the turns must stay flat; the planted one must be found."""
    base = Path(tempfile.mkdtemp(prefix="azclaw-flat-"))
    try:
        memory = TeamMemory({a: base / "agents" / a for a in AGENTS}, watch=watch)
        corpus, planted = Corpus(seed=5), 0
        folder = memory.roots["reviewer"].mailbox / date.today().isoformat() / "remember"
        folder.mkdir(parents=True)
        print(f"\nTurns while memories are planted by hand into one day folder ({'inotify' if watch else 'polling'})")
        print(f"{'memories':>9} | {'first recall s':>14} | {'turn ms (remember + recall) median  max':>40}")
        for target in range(0, top + 1, step):
            while planted < target:
                title, text = corpus.memory(planted)
                (folder / f"{title}.txt").write_text(text, encoding="utf-8")
                planted += 1
            (folder / f"planted-{target}.txt").write_text(f"The needle{target} is here.", encoding="utf-8")
            t = time.perf_counter()
            assert f"needle{target}" in memory.recall(f"needle{target}"), "the planted memory is found"
            first = time.perf_counter() - t
            turns = []
            for i in range(30):
                t = time.perf_counter()
                memory.remember("architect", corpus.memory(10**6 + target + i)[1], f"turn-{target}-{i}")
                memory.recall(corpus.query())
                turns.append((time.perf_counter() - t) * 1000)
            print(f"{target:>9,} | {first:>14.2f} | {statistics.median(turns):>33.1f} {max(turns):>6.1f}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        mode, base, n, watch = argv[1], Path(argv[2]), int(argv[3]), bool(int(argv[4]))
        print(json.dumps((child_build if mode == "build" else child_start)(base, n, watch)))
        return
    watch = "--no-watch" not in argv
    sizes = [int(a) for a in argv if a.isdigit()] or [1_000, 10_000, 100_000]
    bench(sizes, watch)
    flatness(watch=watch)
    ranking(10_000)


if __name__ == "__main__":
    main(sys.argv[1:])
