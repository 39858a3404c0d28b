"""Network namespaces for partition tests: a region's broker behind a link the test can cut, make
lossy or slow, and that is always cleaned up.

Every namespace and veth interface this module creates is named after the creating process
(``m1p-<pid>-<n>``, ``m1ph<pid>x<n>`` on the root side, ``m1pn<pid>x<n>`` inside), so several runs never
collide and leftovers of a run that died can be recognised. Each :class:`Link` is one namespace joined
to the root namespace by a veth pair with a private /30 of ``10.213.0.0/16`` (root side ``.1``,
namespace side ``.2``, chosen free on this machine).

- ``Link.cut()`` drops every packet on the link (iptables DROP inside the namespace: connections
  hang and time out, as in a real partition; ``how="down"`` sets the root-side veth down instead:
  the root side then sees "network unreachable" at once). ``Link.heal()`` undoes either.
- ``Link.set_loss(p)`` drops each packet with probability ``p`` in each direction (iptables
  ``statistic --mode random``); ``clear_loss()`` removes it. ``dropped()`` counts the packets the
  loss and cut rules dropped so far (proof the rule acted).
- WAN latency: :func:`start_broker` with ``latency`` advertises the broker's listener through a
  :class:`regions.wan_proxy.WanProxyProcess` on the root side of the link, so every client
  reaches it over the delayed path.
- Namespace to namespace: :meth:`Lab.route` gives every namespace of the lab a route to the others
  through the root namespace (``10.213.0.0/16`` via its root-side address; IPv4 forwarding on for
  the lab's life, then back to what it was). :meth:`Lab.cut_between` then cuts only the traffic
  between two namespaces, with iptables ``FORWARD`` DROP rules in the root namespace matching their
  two addresses (both ways): each still reaches the root namespace and every other namespace.
  ``heal_between`` removes them. These are the only rules this module adds in the root namespace;
  they carry ``m1p-<pid>-pair`` comments, and :meth:`Lab.close` and :func:`sweep_stale` (for a
  dead run's) delete them; the old forwarding value is kept in ``/run/m1p/<pid>.forward`` so that
  :func:`sweep_stale` puts it back after a killed run.

The other iptables rules live inside the namespaces, so deleting a namespace removes its rules, its
veth pair and (after :func:`remove_link` kills them) the processes in it. Cleanup is guaranteed by
three guards: :func:`lab` (a context manager for fixtures of any scope: its exit is the
finalizer; it also stops what was given to :meth:`Lab.defer`), this module's ``atexit`` hook and
SIGTERM handler (both close every open lab), and :func:`sweep_stale`, which removes the namespaces
a killed run (SIGKILL) of another, no longer living, process left behind, and the processes it
started in the root namespace (:func:`track`). :func:`leftovers` lists what is left.

:func:`require` skips, with the reason, when not root or when ``ip`` is missing.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.kafka.local_broker import LocalKafka, free_port
from core.settings import Settings
from regions.cluster import REGION_BROKER_HEAP, REGION_BROKER_PROPERTIES
from regions.wan_proxy import WanProxyProcess

PREFIX = "m1p"
SUPERNET = ipaddress.ip_network("10.213.0.0/16")
_NAME = re.compile(rf"^{PREFIX}[-hn](\d+)[-x](\d+)$")
#: ``<run pid>.pids``: the root-namespace processes each run started (see :func:`track`).
PIDS_DIR = Path("/run/m1p")
FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def require() -> None:
    """Skip the calling test unless network namespaces can be made here (root, ``ip``)."""
    if os.geteuid() != 0:
        pytest.skip("partition tests need root: they create network namespaces and veth pairs")
    if shutil.which("ip") is None:
        pytest.skip("partition tests need the `ip` command (iproute2)")


def _run(*cmd: str, netns: str | None = None) -> str:
    full = (["ip", "netns", "exec", netns] if netns else []) + list(cmd)
    proc = subprocess.run(full, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _iptables(netns: str, *args: str) -> str:
    if shutil.which("iptables") is None:
        raise RuntimeError("iptables is missing: apt-get install iptables (scripts/install.sh does)")
    return _run("iptables", "-w", *args, netns=netns)


@dataclass
class Link:
    """One namespace, its veth pair and addresses; see the module docstring for the operations."""

    ns: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str
    _rules: list[list[str]] = field(default_factory=list)

    def _add_rule(self, chain: str, *spec: str) -> None:
        rule = [chain, "-i" if chain == "INPUT" else "-o", self.ns_if, *spec]
        _iptables(self.ns, "-I", *rule)
        self._rules.append(rule)

    def _drop_rules(self, tag: str) -> None:
        for rule in [r for r in self._rules if tag in r]:
            _iptables(self.ns, "-D", *rule)
            self._rules.remove(rule)

    def cut(self, how: str = "drop") -> None:
        """Partition the namespace from the root namespace (``drop``: silently; ``down``: link down)."""
        if how == "down":
            _run("ip", "link", "set", self.host_if, "down")
        elif how == "drop":
            for chain in ("INPUT", "OUTPUT"):
                self._add_rule(chain, "-m", "comment", "--comment", f"{PREFIX}-cut", "-j", "DROP")
        else:
            raise ValueError(f"unknown cut {how!r}: drop or down")

    def heal(self) -> None:
        """Undo ``cut`` (either kind)."""
        self._drop_rules(f"{PREFIX}-cut")
        _run("ip", "link", "set", self.host_if, "up")

    def set_loss(self, probability: float) -> None:
        """Drop each packet crossing the link with ``probability``, each direction (replaces any loss)."""
        if not 0 < probability < 1:
            raise ValueError("loss is a probability in (0, 1)")
        self.clear_loss()
        for chain in ("INPUT", "OUTPUT"):
            self._add_rule(chain, "-m", "statistic", "--mode", "random", "--probability", f"{probability:.4f}",
                           "-m", "comment", "--comment", f"{PREFIX}-loss", "-j", "DROP")

    def clear_loss(self) -> None:
        self._drop_rules(f"{PREFIX}-loss")

    def rules(self) -> list[str]:
        """This module's iptables rules now in the namespace (``iptables -S`` lines)."""
        return [line for line in _iptables(self.ns, "-S").splitlines() if f"{PREFIX}-" in line]

    def dropped(self) -> int:
        """Packets this module's rules in the namespace dropped so far."""
        total = 0
        for chain in ("INPUT", "OUTPUT"):
            for line in _iptables(self.ns, "-L", chain, "-v", "-n", "-x").splitlines()[2:]:
                if f"{PREFIX}-" in line:
                    total += int(line.split()[0])
        return total


_live: dict[str, Link] = {}


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = _run("ip", "-o", "-4", "addr", "show")
    return [ipaddress.ip_interface(word).network for line in out.splitlines()
            for word in line.split()[3:4]]


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    subnets = 2 ** (30 - SUPERNET.prefixlen)
    for _ in range(100):
        net = ipaddress.ip_network(f"{SUPERNET.network_address + 4 * random.randrange(subnets)}/30")
        if not any(net.overlaps(other) for other in used):
            return net
    raise RuntimeError(f"no free /30 in {SUPERNET}")


def create_link() -> Link:
    """A new namespace joined to the root namespace by a veth pair, both ends up and addressed."""
    pid, n = os.getpid(), 0
    while f"{PREFIX}-{pid}-{n}" in _live or Path(f"/run/netns/{PREFIX}-{pid}-{n}").exists():
        n += 1
    net = _free_subnet()
    host_addr, ns_addr = (str(a) for a in list(net.hosts())[:2])
    link = Link(f"{PREFIX}-{pid}-{n}", f"{PREFIX}h{pid}x{n}", f"{PREFIX}n{pid}x{n}", host_addr, ns_addr)
    _live[link.ns] = link
    _run("ip", "netns", "add", link.ns)
    _run("ip", "link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if, "netns", link.ns)
    _run("ip", "addr", "add", f"{host_addr}/30", "dev", link.host_if)
    _run("ip", "link", "set", link.host_if, "up")
    _run("ip", "addr", "add", f"{ns_addr}/30", "dev", link.ns_if, netns=link.ns)
    _run("ip", "link", "set", link.ns_if, "up", netns=link.ns)
    _run("ip", "link", "set", "lo", "up", netns=link.ns)
    return link


def _remove_ns(ns: str) -> None:
    """Kill every process in ``ns`` (they were all started there by a test), then delete it."""
    try:
        pids = _run("ip", "netns", "pids", ns).split()
    except RuntimeError:
        pids = []
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    # The root side of the pair goes with its peer; a half-made pair is removed by name.
    match = _NAME.match(ns)
    if match:
        subprocess.run(["ip", "link", "del", f"{PREFIX}h{match[1]}x{match[2]}"], capture_output=True, timeout=30)


def remove_link(link: Link) -> None:
    _remove_ns(link.ns)
    _live.pop(link.ns, None)


def cleanup_all() -> None:
    """Close every open lab and remove every namespace this process made (the atexit hook)."""
    for made in list(_open_labs):
        made.close()
    for ns in list(_live):
        _remove_ns(ns)
        _live.pop(ns, None)
    (PIDS_DIR / f"{os.getpid()}.pids").unlink(missing_ok=True)


def _names() -> tuple[list[str], list[str]]:
    namespaces = [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]
    links = [line.split(":")[1].strip().split("@")[0] for line in _run("ip", "-o", "link", "show").splitlines()]
    return ([n for n in namespaces if n.startswith(PREFIX + "-")],
            [name for name in links if _NAME.match(name)])


_PAIR = re.compile(rf"{PREFIX}-(\d+)-pair")


def _root_pair_rules(pid: int | None = None) -> list[str]:
    """This module's ``FORWARD`` rules in the root namespace (``iptables -S`` lines), of run ``pid``
    only when given."""
    if shutil.which("iptables") is None:
        return []
    return [line for line in _run("iptables", "-w", "-S", "FORWARD").splitlines()
            if (m := _PAIR.search(line)) and (pid is None or int(m[1]) == pid)]


def _delete_root_rule(line: str) -> None:
    """Delete one rule given as an ``iptables -S`` line (``-A CHAIN ...``)."""
    import shlex

    words = shlex.split(line)
    subprocess.run(["iptables", "-w", "-D", *words[1:]], capture_output=True, timeout=30)


def leftovers(pid: int | None = None) -> list[str]:
    """Namespaces and root-side veths of this module (of process ``pid`` only, when given), and any
    of its iptables rules in the root namespace (only :meth:`Lab.cut_between` adds some)."""
    namespaces, links = _names()
    found = [n for n in namespaces + links if pid is None or int(_NAME.match(n)[1]) == pid]
    return found + _root_pair_rules(pid)


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (tells it from a later process reusing the id), or ``None``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def track(pid: int) -> None:
    """Record a root-namespace process this run started (MirrorMaker, an agent), so that
    :func:`sweep_stale` can stop it if this run is killed before its lab is closed."""
    PIDS_DIR.mkdir(parents=True, exist_ok=True)
    with open(PIDS_DIR / f"{os.getpid()}.pids", "a") as out:
        out.write(f"{pid} {_started(pid)}\n")


def sweep_stale() -> list[str]:
    """Remove what runs of processes that no longer exist left behind (a SIGKILLed test run):
    their namespaces, veths and the root-namespace processes they recorded with :func:`track`."""
    removed = []
    for line in _root_pair_rules():
        if not Path(f"/proc/{_PAIR.search(line)[1]}").exists():
            _delete_root_rule(line)
            removed.append(line)
    for record in PIDS_DIR.glob("*.forward") if PIDS_DIR.exists() else []:
        if not Path(f"/proc/{record.stem}").exists():  # a killed run turned forwarding on: put it back
            value = record.read_text().strip()
            FORWARD.write_text(value + "\n")
            record.unlink()
            removed.append(f"ip_forward={value}")
    for record in PIDS_DIR.glob("*.pids") if PIDS_DIR.exists() else []:
        if Path(f"/proc/{record.stem}").exists():
            continue
        for line in record.read_text().splitlines():
            pid, started = line.split()
            if _started(int(pid)) == started:  # the very process that run started
                os.kill(int(pid), signal.SIGKILL)
                removed.append(f"pid {pid}")
        record.unlink()
    namespaces, links = _names()
    for name in namespaces + links:
        pid = int(_NAME.match(name)[1])
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            if name in namespaces:
                _remove_ns(name)
            else:
                subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=30)
            removed.append(name)
    return removed


def _cleanup_on_sigterm(signum: int, frame: object) -> None:
    """Clean up, then die of the signal as if no handler were set (pytest would catch an
    exception raised here as one test's failure and go on)."""
    cleanup_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


atexit.register(cleanup_all)
if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _cleanup_on_sigterm)


@dataclass
class NetnsBroker:
    """A real KRaft broker running inside ``link``'s namespace, reached at ``bootstrap``."""

    link: Link
    kafka: LocalKafka
    bootstrap: str
    proxy: WanProxyProcess | None = None

    def stop(self) -> None:
        self.kafka.stop(timeout=10)
        if self.proxy is not None:
            self.proxy.stop()


def start_broker(link: Link, home: Path, latency: float | None = None,
                 extra_properties: dict[str, str] | None = None) -> NetnsBroker:
    """Start a broker in ``link.ns`` listening on ``link.ns_addr``. With ``latency`` (one-way
    seconds), the listener is advertised through a WAN proxy on ``link.host_addr``: clients reach
    the broker only over the delayed path (set ``broker.proxy.set_latency`` to change it)."""
    port = free_port()  # any port is free in a namespace of its own
    props = {**REGION_BROKER_PROPERTIES, **(extra_properties or {})}
    proxy = None
    if latency is not None:
        proxy = WanProxyProcess((link.ns_addr, port), latency, listen=(link.host_addr, 0))
        proxy_host, proxy_port = proxy.start()
        props["advertised.listeners"] = f"PLAINTEXT://{proxy_host}:{proxy_port}"
    kafka = LocalKafka(Settings(home=home, kafka_port=port), home=home / "kafka", host=link.ns_addr,
                       netns=link.ns, extra_properties=props, heap=REGION_BROKER_HEAP)
    try:
        kafka.start(timeout=180)
    except BaseException:
        if proxy is not None:
            proxy.stop()
        raise
    bootstrap = props["advertised.listeners"].split("//")[1] if proxy else f"{link.ns_addr}:{port}"
    return NetnsBroker(link, kafka, bootstrap, proxy)


class Lab:
    """What one test (or module) made: links, brokers and anything given to ``defer`` (processes in
    the root namespace, say), all undone by ``close`` (idempotent; the atexit hook closes open labs).
    :meth:`broker` may be called from several threads at once (the brokers then start together)."""

    def __init__(self) -> None:
        require()
        sweep_stale()
        self.links: list[Link] = []
        self.brokers: list[NetnsBroker] = []
        self._deferred: list[Callable[[], object]] = []
        self._pair_rules: list[list[str]] = []
        self._lock = threading.Lock()  # create_link picks the next free name and subnet
        _open_labs.add(self)

    def link(self) -> Link:
        with self._lock:
            self.links.append(create_link())
            return self.links[-1]

    def broker(self, home: Path, latency: float | None = None, **extra_properties: str) -> NetnsBroker:
        """A new link with a broker in its namespace (see :func:`start_broker`)."""
        broker = start_broker(self.link(), home, latency, extra_properties)
        with self._lock:
            self.brokers.append(broker)
        return broker

    def route(self) -> None:
        """Let the lab's namespaces reach each other through the root namespace (see the module
        docstring); forwarding goes back to its old value when the lab closes."""
        before = FORWARD.read_text().strip()
        if before != "1":
            PIDS_DIR.mkdir(parents=True, exist_ok=True)
            record = PIDS_DIR / f"{os.getpid()}.forward"
            record.write_text(before)  # for sweep_stale, if this run is killed
            FORWARD.write_text("1\n")

            def restore() -> None:
                FORWARD.write_text(before + "\n")
                record.unlink(missing_ok=True)

            self.defer(restore)
        for link in self.links:
            _run("ip", "route", "replace", str(SUPERNET), "via", link.host_addr, netns=link.ns)

    def cut_between(self, a: Link, b: Link) -> None:
        """Drop everything between namespaces ``a`` and ``b`` (both ways) in the root's FORWARD chain."""
        tag = f"{PREFIX}-{os.getpid()}-pair"
        for src, dst in ((a, b), (b, a)):
            rule = ["FORWARD", "-s", src.ns_addr, "-d", dst.ns_addr, "-m", "comment", "--comment", tag, "-j", "DROP"]
            _run("iptables", "-w", "-I", *rule)
            self._pair_rules.append(rule)

    def heal_between(self) -> None:
        """Remove every cut :meth:`cut_between` made."""
        while self._pair_rules:
            subprocess.run(["iptables", "-w", "-D", *self._pair_rules.pop()], capture_output=True, timeout=30)

    def pair_dropped(self) -> int:
        """Packets the FORWARD cuts dropped so far."""
        out = _run("iptables", "-w", "-L", "FORWARD", "-v", "-n", "-x")
        return sum(int(line.split()[0]) for line in out.splitlines()[2:] if f"{PREFIX}-{os.getpid()}-pair" in line)

    def defer(self, undo: Callable[[], object]) -> None:
        """Call ``undo`` on ``close``, before the namespaces go (last deferred, first called)."""
        self._deferred.append(undo)

    def close(self) -> None:
        self.heal_between()
        while self._deferred:
            try:
                self._deferred.pop()()
            except Exception as exc:  # the rest must still be undone
                print(f"netns lab: cleanup step failed: {exc!r}", file=sys.stderr)
        for broker in self.brokers:
            if broker.proxy is not None:
                broker.proxy.stop()
        for link in self.links:
            remove_link(link)  # kills the brokers in it
        self.links, self.brokers = [], []
        _open_labs.discard(self)


_open_labs: set[Lab] = set()


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    """A :class:`Lab` closed on the way out, whatever happens (use in fixtures of any scope)."""
    made = Lab()
    try:
        yield made
    finally:
        made.close()
