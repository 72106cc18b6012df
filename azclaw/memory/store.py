"""The SQLite FTS5 file behind the memory index: a cache, never the truth.

One row per memory file (mailbox, day, file stem, modification time and a
signature of its stat) and its title and text in a full-text table. Delete
the file and it is rebuilt from the AgentAZAll folders. Threads share one
connection under a lock; processes share the file through SQLite's locking
(WAL). A file is read inside the write transaction that stores it, so a
stale read can never overwrite a newer one.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import MemoryIndexError
from .layout import MEMORIES, Shelf

SCHEMA = 2  # 2: the index holds memory text without azclaw's trailers
MAX_BYTES = 1 << 20  # index at most this much of one memory
TITLE_WEIGHT = 4.0  # bm25 weight of the title column; the body weighs 1
POSTINGS = 20_000  # a query drops its commonest words once they would match more memories than this
CHEAP = 5_000  # ... but never a word found in fewer memories than this
NEWEST = 1_000  # a query of only such common words ranks the newest this many matches
TOKENIZE = "'porter unicode61 remove_diacritics 2'"
FTS = "fts5"  # the SQLite full-text module every query needs
_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}

_TABLES = """
CREATE TABLE boxes(id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, n INTEGER NOT NULL DEFAULT 0);
CREATE TABLE docs(id INTEGER PRIMARY KEY, box INTEGER NOT NULL, day TEXT NOT NULL, name TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL, sig TEXT NOT NULL, UNIQUE(box, day, name));
CREATE INDEX docs_newest ON docs(day, mtime_ns);
CREATE INDEX docs_box_newest ON docs(box, day, mtime_ns);
CREATE VIRTUAL TABLE fts USING fts5(title, body, owner, tokenize=%s)
""" % TOKENIZE
# per connection: the tokenizer applied to query words, and how many memories hold each term
_TEMP = """
CREATE VIRTUAL TABLE IF NOT EXISTS temp.words USING fts5(word, tokenize=%s);
CREATE VIRTUAL TABLE IF NOT EXISTS temp.word_terms USING fts5vocab(temp, words, instance);
CREATE VIRTUAL TABLE IF NOT EXISTS temp.terms USING fts5vocab(main, fts, row)
""" % TOKENIZE


def require_fts() -> None:
    """Raise MemoryIndexError, naming the fix, when this Python's sqlite3
    was built without the full-text search the index needs."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f"CREATE VIRTUAL TABLE temp.probe USING {FTS}(body, tokenize={TOKENIZE})")
    except sqlite3.OperationalError as exc:
        raise MemoryIndexError(
            f"memory search needs SQLite with {FTS.upper()}, and this Python's sqlite3 (SQLite "
            f"{sqlite3.sqlite_version}) has none ({exc}); use a Python built with it (python.org, "
            "Debian/Ubuntu, conda and uv Pythons are)") from None
    finally:
        conn.close()


@dataclass(frozen=True)
class Entry:
    """One stored memory: mailbox id, day folder, file stem, and a score
    (higher is better) when it came from a search."""

    box: int
    day: str
    name: str
    mtime_ns: int
    sig: str
    score: float = 0.0


def file_sig(st: os.stat_result) -> str:
    """Changes whenever the content may have; ctime cannot be set back."""
    return f"{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_size}:{st.st_ino}"


def read_memory(path: str) -> tuple[os.stat_result | None, str]:
    """A memory file's stat (taken before reading, so that a later change
    shows as a mismatch) and text; (None, "") when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block the reader
    except OSError:
        return None, ""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, ""
        chunks, left = [], min(st.st_size, MAX_BYTES)
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return st, b"".join(chunks).decode("utf-8", errors="replace")
    except OSError:
        return None, ""
    finally:
        os.close(fd)


def is_corrupt(exc: BaseException) -> bool:
    """A damaged cache file (to be rebuilt), not a busy or missing one."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = getattr(exc, "sqlite_errorname", None)  # Python 3.11+
    if name is not None:
        return name in _CORRUPT
    return any(m in str(exc) for m in ("file is not a database", "malformed"))


class MemoryStore:
    """The database at ``path`` (``":memory:"`` keeps it private to this
    object) holding the files of ``shelf`` in the given mailbox folders."""

    def __init__(self, path: str | Path, mailboxes: list[str], shelf: Shelf = MEMORIES):
        self.path = str(path)
        self.mailboxes = list(dict.fromkeys(mailboxes))
        self.shelf = shelf
        self.lock = threading.RLock()
        self.ids: dict[str, int] = {}  # mailbox folder -> box id
        self.others = False  # the file also holds mailboxes of another team
        self.opened = 0  # connections opened so far: box ids may change with a new file
        self._added: dict[int, int] = {}  # memories added per mailbox in this transaction
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection, opened on first use (and again after a fork)."""
        if self._conn is None or self._pid != os.getpid():
            self._conn = None  # one inherited over fork() must not be used
            try:
                self._conn = self._open()
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                self.discard()
                self._conn = self._open()
            self._pid = os.getpid()
            self.opened += 1
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            folder = Path(self.path).parent
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                (folder / ".gitignore").write_text("# azclaw's disposable cache\n*\n", encoding="utf-8")
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            if self.path != ":memory:":
                _wal(conn)
            conn.execute("PRAGMA synchronous=OFF")  # a crash costs a rebuild, never a memory
            conn.execute("PRAGMA cache_size=-16000")
            with self.transaction(conn):
                if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA:
                    for table in ("fts", "docs", "boxes"):
                        conn.execute(f"DROP TABLE IF EXISTS {table}")
                    for statement in _TABLES.split(";"):  # not executescript: it would COMMIT
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={SCHEMA}")
                conn.executemany("INSERT OR IGNORE INTO boxes(path) VALUES (?)", [(m,) for m in self.mailboxes])
                ids = dict(conn.execute("SELECT path, id FROM boxes").fetchall())
            for statement in _TEMP.split(";"):
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        self.ids = {m: ids[m] for m in self.mailboxes}
        self.others = len(ids) > len(self.ids)
        return conn

    def discard(self) -> None:
        """Forget the database file; the next use rebuilds it from the files."""
        self.close()
        if self.path != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(self.path + suffix)
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __del__(self):
        # sqlite3 connections sit in reference cycles: without this their files
        # stay open until the garbage collector runs
        try:
            self.close()
        except Exception:
            pass

    @contextmanager
    def transaction(self, conn: sqlite3.Connection | None = None):
        """A write transaction; other processes wait (busy timeout) for it."""
        conn = conn or self.conn
        conn.execute("BEGIN IMMEDIATE")
        self._added = {}
        try:
            yield conn
            conn.executemany("UPDATE boxes SET n = n + ? WHERE id=?", [(d, b) for b, d in self._added.items() if d])
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            self._added = {}
        conn.execute("COMMIT")

    # -- writing (inside a transaction) ------------------------------------------
    def put_file(self, box: int, day: str, name: str, mailbox: str, only_if_changed: bool = False,
                 read: tuple[os.stat_result | None, str] | None = None) -> str:
        """Store the memory file as it is now (``read``: its ``read_memory``,
        made inside this transaction), or forget it if it is gone. Returns
        the stored signature ("" when gone)."""
        st, body = read or read_memory(self.shelf.path(mailbox, day, name))
        body = self.shelf.searchable(body)
        conn = self.conn
        if st is not None and not only_if_changed:  # most often new: skip the lookup
            sig = file_sig(st)
            cur = conn.execute("INSERT OR IGNORE INTO docs(box, day, name, mtime_ns, sig) VALUES (?, ?, ?, ?, ?)",
                               (box, day, name, st.st_mtime_ns, sig))
            if cur.rowcount == 1:
                conn.execute("INSERT INTO fts(rowid, title, body, owner) VALUES (?, ?, ?, ?)",
                             (cur.lastrowid, name.replace("_", " "), body, f"azbox{box}"))
                return self._count(box, 1, sig)
        row = conn.execute("SELECT id, sig FROM docs WHERE box=? AND day=? AND name=?", (box, day, name)).fetchone()
        if st is None:
            if row:
                conn.execute("DELETE FROM fts WHERE rowid=?", row[:1])
                conn.execute("DELETE FROM docs WHERE id=?", row[:1])
                return self._count(box, -1, "")
            return ""
        sig, title = file_sig(st), name.replace("_", " ")
        if row is None:
            cur = conn.execute("INSERT INTO docs(box, day, name, mtime_ns, sig) VALUES (?, ?, ?, ?, ?)",
                               (box, day, name, st.st_mtime_ns, sig))
            conn.execute("INSERT INTO fts(rowid, title, body, owner) VALUES (?, ?, ?, ?)",
                         (cur.lastrowid, title, body, f"azbox{box}"))
            return self._count(box, 1, sig)
        if row[1] != sig:
            conn.execute("UPDATE docs SET mtime_ns=?, sig=? WHERE id=?", (st.st_mtime_ns, sig, row[0]))
        stored = conn.execute("SELECT body FROM fts WHERE rowid=?", row[:1]).fetchone() if only_if_changed else None
        if stored is None or stored[0] != body:
            conn.execute("UPDATE fts SET title=?, body=? WHERE rowid=?", (title, body, row[0]))
        return sig

    def _count(self, box: int, delta: int, sig: str) -> str:
        self._added[box] = self._added.get(box, 0) + delta  # written once, at COMMIT
        return sig

    def forget_day(self, box: int, day: str) -> None:
        conn = self.conn
        conn.execute("DELETE FROM fts WHERE rowid IN (SELECT id FROM docs WHERE box=? AND day=?)", (box, day))
        gone = conn.execute("DELETE FROM docs WHERE box=? AND day=?", (box, day)).rowcount
        conn.execute("UPDATE boxes SET n = n - ? WHERE id=?", (gone, box))

    def recount(self) -> None:
        """Recount the memories per mailbox (kept as a running count)."""
        with self.transaction() as conn:
            conn.execute("UPDATE boxes SET n = (SELECT count(*) FROM docs WHERE docs.box = boxes.id)")

    # -- reading -----------------------------------------------------------------
    def sigs(self, box: int, day: str | None = None) -> dict:
        """{(day, name): sig} of one mailbox, or {name: sig} of one of its days."""
        if day is not None:
            return dict(self.conn.execute("SELECT name, sig FROM docs WHERE box=? AND day=?", (box, day)))
        return {(d, n): s for d, n, s in self.conn.execute("SELECT day, name, sig FROM docs WHERE box=?", (box,))}

    def sig(self, box: int, day: str, name: str) -> str:
        row = self.conn.execute("SELECT sig FROM docs WHERE box=? AND day=? AND name=?", (box, day, name)).fetchone()
        return row[0] if row else ""

    def plan(self, words: list[str]) -> tuple[list[str], bool]:
        """The query words worth searching for, rarest first. In a large
        collection a word found in half the memories or more gets no weight
        from bm25 and costs the most, so it is left out when rarer words
        are there, as are the commonest words once the query would touch
        more than POSTINGS memories. True when even the rarest word is that
        common (then only the newest NEWEST matches are ranked)."""
        conn = self.conn
        conn.execute("DELETE FROM temp.words")
        conn.executemany("INSERT INTO temp.words(rowid, word) VALUES (?, ?)", enumerate(words))
        word_of: dict[str, str] = {}
        for i, term in conn.execute("SELECT doc, term FROM temp.word_terms ORDER BY doc"):
            word_of.setdefault(term, words[i])
        marks = ",".join("?" * len(word_of))
        found = sorted((df, term) for term, df in conn.execute(
            f"SELECT term, doc FROM temp.terms WHERE term IN ({marks})", list(word_of)))
        total = conn.execute("SELECT sum(n) FROM boxes").fetchone()[0] or 0
        kept, touched = [], 0
        for df, term in found:
            if kept and df >= CHEAP and (df * 2 >= total or touched + df > POSTINGS):
                break
            kept.append(word_of[term])
            touched += df
        return kept, bool(found) and found[0][0] > POSTINGS

    def search(self, words: list[str], boxes: list[int], limit: int) -> list[Entry]:
        """Up to ``limit`` memories matching any word, by bm25 (best first,
        with the title weighing TITLE_WEIGHT); ``words`` are bare words."""
        words, common = self.plan(words)
        if not words:
            return []
        match = "{title body} : (" + " OR ".join(f'"{w}"' for w in words) + ")"
        if self.others or len(boxes) < len(self.ids):
            match += " AND owner : (" + " OR ".join(f'"azbox{b}"' for b in boxes) + ")"
        scored = f"SELECT rowid, bm25(fts, {TITLE_WEIGHT}, 1.0, 0.0) AS score FROM fts WHERE fts MATCH ?"
        if common:  # scoring every match would take long and tell little: score the latest
            scored = f"SELECT * FROM ({scored} ORDER BY rowid DESC LIMIT {NEWEST})"
        rows = self.conn.execute(
            f"SELECT d.box, d.day, d.name, d.mtime_ns, d.sig, m.score FROM ({scored} ORDER BY score, rowid DESC"
            " LIMIT ?) AS m"
            " JOIN docs AS d ON d.id = m.rowid", (match, limit)).fetchall()
        return [Entry(box, day, name, mtime, sig, -score) for box, day, name, mtime, sig, score in rows]

    def newest(self, boxes: list[int], limit: int | None) -> list[Entry]:
        sql = (f"SELECT box, day, name, mtime_ns, sig FROM docs WHERE box IN ({','.join('?' * len(boxes))})"
               " ORDER BY day DESC, mtime_ns DESC")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Entry(*row) for row in self.conn.execute(sql, boxes)]

    def latest(self, box: int) -> Entry | None:
        row = self.conn.execute("SELECT box, day, name, mtime_ns, sig FROM docs WHERE box=?"
                                " ORDER BY day DESC, mtime_ns DESC LIMIT 1", (box,)).fetchone()
        return Entry(*row) if row else None

    def counts(self, boxes: list[int]) -> dict[int, int]:
        return dict(self.conn.execute(f"SELECT id, n FROM boxes WHERE id IN ({','.join('?' * len(boxes))})", boxes))


def _wal(conn: sqlite3.Connection, tries: int = 50) -> None:
    """Put the database in WAL mode. Changing the mode takes the whole file,
    and SQLite answers "database is locked" at once (its busy timeout does
    not apply) while another process opens the same file: try again then."""
    for attempt in range(tries):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.02 * (attempt + 1))
