"""Security: during a local search nothing listens beyond loopback; user files load without pickle."""
import ipaddress
import threading
import time

import psutil

from cspnas.search.runner import run_search
from cspnas.search.settings import SearchSettings, search_training


def _our_listeners() -> set[tuple[int, str]]:
    """(pid, address) of every listening TCP/UDP socket owned by this process or its descendants."""
    me = psutil.Process()
    pids = {me.pid} | {c.pid for c in me.children(recursive=True)}
    out = set()
    for c in psutil.net_connections(kind="inet"):
        if c.pid in pids and c.laddr and (c.status == psutil.CONN_LISTEN or c.type == 2):
            out.add((c.pid, c.laddr.ip))
    return out


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if getattr(addr, "ipv4_mapped", None):
        addr = addr.ipv4_mapped
    return addr.is_loopback


def test_local_search_listens_on_loopback_only(tmp_path):
    seen: set[tuple[int, str]] = set()
    done = threading.Event()
    errors = []

    def search():
        try:
            run_search(SearchSettings(name="sec", results_dir=str(tmp_path), budget=3,
                                      train=search_training(epochs=1), device="cpu", sampler="random",
                                      latency_min_run_time_s=0.05), live=False)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            done.set()

    worker = threading.Thread(target=search)
    worker.start()
    while not done.is_set():
        seen |= _our_listeners()
        time.sleep(0.2)
    worker.join()
    import ray

    ray.shutdown()
    assert not errors, errors
    assert seen, "no Ray sockets were observed: the probe itself is broken"
    exposed = {(pid, ip) for pid, ip in seen if not _is_loopback(ip)}
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_user_files_never_unpickle():
    """Architecture files are JSON; weights and caches are safetensors or weights_only loads."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "cspnas"
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        if re.search(r"\bpickle\.loads?\(|\bcloudpickle\b|\bjoblib\.load\(", text):
            offenders.append(str(path))
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                offenders.append(f"{path}: torch.load without weights_only=True")
    assert not offenders, offenders
