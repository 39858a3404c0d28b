"""The partition tooling (tests/regions/netns.py) on real namespaces, veth pairs and iptables rules:
cut, loss and heal act on a real TCP server in a namespace, and nothing is left behind when a run
fails, is terminated or is killed."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.kafka.local_broker import _pid_alive
from tests.regions.netns import FORWARD, Lab, Link, lab, leftovers, require, sweep_stale

ROOT = Path(__file__).resolve().parents[2]
# One thread per connection with a read timeout: a connection whose byte was lost on a lossy link
# must not hold up the next one.
ECHO = """
import socket, sys, threading
def echo(conn):
    with conn:
        conn.settimeout(5)
        try:
            conn.sendall(conn.recv(1))
        except OSError:
            pass
server = socket.create_server((sys.argv[1], 7777))
while True:
    threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()
"""


@pytest.fixture
def partition_lab() -> Iterator[Lab]:
    with lab() as made:
        yield made


def _echo_in(link: Link) -> subprocess.Popen:
    server = subprocess.Popen(["ip", "netns", "exec", link.ns, sys.executable, "-c", ECHO, link.ns_addr])
    deadline = time.monotonic() + 20
    while not _reaches(link) and time.monotonic() < deadline:
        time.sleep(0.2)
    return server


def _reaches(link: Link, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((link.ns_addr, 7777), timeout=timeout) as sock:
            sock.sendall(b"x")
            return sock.recv(1) == b"x"
    except OSError:
        return False


def test_cut_heal_and_loss_act_on_a_real_server(partition_lab: Lab) -> None:
    link = partition_lab.link()
    server = _echo_in(link)
    assert _reaches(link)

    link.cut()
    assert not _reaches(link)
    assert link.dropped() > 0
    assert len(link.rules()) == 2
    link.heal()
    assert _reaches(link) and link.rules() == []

    link.cut("down")
    assert not _reaches(link)
    link.heal()
    assert _reaches(link, timeout=5)

    link.set_loss(0.4)
    attempts = [_reaches(link, timeout=0.3) for _ in range(30)]
    assert link.dropped() > 0
    assert any(attempts)  # lossy, not cut
    link.clear_loss()
    assert link.rules() == [] and _reaches(link, timeout=5)
    partition_lab.close()
    assert server.wait(10) is not None  # the process in the namespace went with it


SCRIPT = """
import subprocess, sys, time
from tests.regions.netns import lab, leftovers, track
import os
with lab() as made:
    link = made.link()
    link.cut(); link.set_loss(0.2)
    other = made.link()
    made.route(); made.cut_between(link, other)  # two FORWARD rules in the root namespace
    sleeper = subprocess.Popen(["ip", "netns", "exec", link.ns, "sleep", "300"])
    outside = subprocess.Popen(["sleep", "300"], start_new_session=True)  # in the root namespace
    track(outside.pid)
    made.defer(outside.kill)
    print(len(leftovers(os.getpid())), len(link.rules()), sleeper.pid, outside.pid, flush=True)
    if sys.argv[1] == "fail":
        raise RuntimeError("a failing test")
    time.sleep(300)  # until terminated or killed
"""


def _run_script(mode: str) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    made = [int(word) for word in proc.stdout.readline().split()]
    return proc, made


@pytest.mark.parametrize("mode", ["fail", "sigterm"])
def test_nothing_is_left_when_a_run_fails_or_is_terminated(mode: str) -> None:
    require()
    proc, made = _run_script(mode)
    assert made[:2] == [6, 4]  # two namespaces, two veths and two root FORWARD rules; the cut and the loss rules
    if mode == "sigterm":
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) != 0
    assert leftovers(proc.pid) == []
    assert not _pid_alive(made[2]) and not _pid_alive(made[3])  # what it ran in a namespace and outside


def test_a_killed_run_is_swept_by_the_next() -> None:
    require()
    forwarding = FORWARD.read_text()
    proc, made = _run_script("kill")
    assert made[:2] == [6, 4]
    proc.kill()
    proc.wait(30)
    assert len(leftovers(proc.pid)) == 6 and _pid_alive(made[2]) and _pid_alive(made[3])  # SIGKILL: no hook ran
    swept = sweep_stale()
    assert len([name for name in swept if f"{proc.pid}" in name]) >= 4 and f"pid {made[3]}" in swept
    assert leftovers(proc.pid) == [] and FORWARD.read_text() == forwarding  # forwarding back as it was
    assert not _pid_alive(made[2]) and not _pid_alive(made[3])
