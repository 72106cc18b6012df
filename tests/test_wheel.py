"""A built wheel, installed in a fresh venv outside the checkout, runs every
shipped topic by name: topics and the COBOL sources ship inside
the package."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakellm import call, text
from helpers import CLI_TIMEOUT, MODEL_TIMEOUT

pytestmark = pytest.mark.slow  # builds a wheel and installs it in a fresh venv: minutes
INSTALL_TIMEOUT = MODEL_TIMEOUT  # pip on a busy machine; a bound against a hang, never a measure

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.stem for p in (REPO / "azclaw" / "topics").glob("*.json"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The ``azclaw`` command of a fresh venv that has only the built wheel
    (and agentazall) installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(REPO)]
    subprocess.run(build, check=True, capture_output=True, timeout=INSTALL_TIMEOUT)
    [wheel] = (tmp / "dist").glob("azclaw-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=INSTALL_TIMEOUT)
    # outside the checkout, without PYTHONPATH: the azclaw.egg-info that building the wheel leaves in the
    # checkout would otherwise tell pip that azclaw is installed already
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    pip = subprocess.run([str(tmp / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                         cwd=tmp, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert pip.returncode == 0, pip.stderr
    return tmp / "venv" / "bin" / "azclaw"


def test_the_wheel_holds_the_topics_and_the_cobol_sources(installed):
    site = next(installed.parent.parent.glob("lib/python*/site-packages/azclaw"))
    assert sorted(p.stem for p in (site / "topics").glob("*.json")) == SHIPPED
    assert (site / "topics" / "bank-cobol" / "cbl" / "ACCTUPD.cbl").is_file()
    assert not (site / "topics").is_symlink()


@pytest.mark.parametrize("topic", SHIPPED)
def test_every_shipped_topic_runs_by_name_from_the_installed_wheel(installed, fake_llm, tmp_path, topic):
    fake = fake_llm(per_agent={"architect": [call("list_files", {}), text("listed")]})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZCLAW_", "PYTHON"))}
    proc = subprocess.run([str(installed), "run", "--topic", topic, "--endpoint", fake.url, "--max-rounds", "1",
                           "--retries", "0"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "no source folder holds" not in proc.stderr
    journal = [json.loads(line) for line in next((tmp_path / "logs").glob("*_journal.jsonl")).read_text().splitlines()]
    assert [e["agent"] for e in journal if e["event"] == "turn"] == ["architect", "developer", "reviewer"]
    listing = fake.chats_of("architect")[1].tool_results[0]
    if topic == "cobol-migration":
        assert "ACCTUPD.cbl" in listing, listing
