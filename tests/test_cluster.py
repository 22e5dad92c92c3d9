"""A real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`),
joined by `cspnas search --address`: trials run on both nodes and the records are complete.

Security: the cluster listens on loopback only and uses token authentication with a token made
for this test (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH); a test asserts that none of its
processes listens beyond loopback.
- Ray rewrites a 127.0.0.1 node address to the machine's external IP and then binds its gRPC
  servers to every interface, unless "cluster mode" is off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
  as cspnas does for local searches), and with cluster mode off `ray start --address` refuses
  to join. The joining node therefore runs the `ray` CLI through JOIN_LOOPBACK, which lets it
  join but keeps 127.0.0.1 as it is (a test-only patch of two Ray internals; should Ray rename
  them, it fails loudly instead of binding wider).
- Ray (2.60 here) turns token auth on for `ray start --head` when ~/.ray/auth_token exists, but
  a joining node or a driver given an explicit address sends a token only with
  RAY_AUTH_MODE=token.
Teardown kills exactly this cluster's processes (its process groups, then anything still naming
its temp dir), never `ray stop`, which stops every Ray instance of the user on the machine.
"""
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from cspnas.errors import CspnasError
from cspnas.search.runner import run_search
from cspnas.search.settings import SearchSettings

FINAL = {"complete", "infeasible", "pruned", "failed"}
_VENV_RAY = Path(sys.executable).with_name("ray")
RAY = str(_VENV_RAY) if _VENV_RAY.is_file() else shutil.which("ray")  # the `ray` CLI
JOIN_LOOPBACK = """
import sys
import ray._private.ray_constants as constants
import ray._private.services as services
assert hasattr(constants, "ENABLE_RAY_CLUSTER") and hasattr(services, "resolve_ip_for_localhost")
constants.ENABLE_RAY_CLUSTER = True  # allow joining a cluster...
services.resolve_ip_for_localhost = lambda host: host  # ...but keep 127.0.0.1 (no external IP)
from ray.scripts.scripts import main
sys.exit(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_started(proc: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    pytest.fail(f"ray start did not come up: {log.read_text(errors='replace')[-3000:]}")


class Cluster:
    def __init__(self):
        # a short temp dir: Ray's unix socket paths live under it (108-byte limit)
        self.root = Path(tempfile.mkdtemp(prefix="cspnas-ray-", dir="/tmp"))
        token = self.root / "token"
        token.touch(mode=0o600)
        token.write_text(secrets.token_hex(32))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                    "CSPNAS_CACHE_DIR": str(self.root / "cache")}  # the nodes' workers decode data sets here
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        """Head and one worker node, 1 CPU each, ports of their own, state under our temp dir."""
        common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
                  "--temp-dir", str(self.root / "ray"), "--dashboard-agent-listen-port", None]
        self._start("head", [RAY, "start", "--head", "--port", str(self.port), "--include-dashboard", "false",
                             "--disable-usage-stats", *common])
        self._start("worker", [sys.executable, "-c", JOIN_LOOPBACK, "start", "--address", self.address, *common])

    def _start(self, name: str, cmd: list) -> None:
        cmd = [str(free_port()) if c is None else c for c in cmd]
        log = self.root / f"{name}.log"
        with open(log, "w") as out:
            # the nodes' working directory is ours, so a relative path resolved there shows up under root
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=self.root)
        self.procs.append(proc)
        wait_started(proc, log)

    def processes(self) -> list[psutil.Process]:
        found = []
        for proc in self.procs:
            try:
                leader = psutil.Process(proc.pid)
                found += [leader, *leader.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return found

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        marker = str(self.root)  # in the command line or (agents rename themselves) the environment
        for p in psutil.process_iter(["cmdline", "environ"]):  # anything of ours that left the groups
            try:
                if any(marker in part for part in p.info["cmdline"] or ()) or \
                        marker in (p.info["environ"] or {}).get("RAY_AUTH_TOKEN_PATH", ""):
                    p.kill()
            except psutil.Error:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


def cspnas_cli(args: list[str], timeout_s: float, **kw) -> subprocess.CompletedProcess:
    """Run the CLI in its own process group, and kill whatever Ray processes it left behind."""
    proc = subprocess.Popen([sys.executable, "-m", "cspnas.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def search(cluster: Cluster, results: Path, name: str, env: dict | None = None, timeout_s: float = 300,
           data: list[str] = (), cwd: Path | None = None):
    return cspnas_cli(["search", "--address", cluster.address, "--budget", "4", "--epochs", "1", "--concurrency",
                       "2", "--cpus-per-trial", "1", "--sampler", "random", "--results-dir", str(results),
                       "--name", name, "--device", "cpu", "--no-dashboard", *data], timeout_s, env=env or cluster.env,
                      cwd=cwd)


def image_folder(root: Path) -> None:
    """root/imgs: a two-class image folder (train/ and val/), small random 12x12 images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("val", 6)):
        for label in ("a", "b"):
            folder = root / "imgs" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback


def non_loopback_listeners(cluster: Cluster) -> list[str]:
    """Listening TCP and bound UDP sockets of the cluster's processes that are not on loopback."""
    pids = {p.pid for p in cluster.processes()}
    listening = [c for c in psutil.net_connections("inet") if c.pid in pids and c.laddr
                 and (c.status == psutil.CONN_LISTEN or c.type == socket.SOCK_DGRAM)]
    assert any(c.laddr.port == cluster.port for c in listening), "cannot see the cluster's sockets"
    return [f"{c.pid} {c.laddr.ip}:{c.laddr.port}" for c in listening if not is_loopback(c.laddr.ip)]


@pytest.mark.slow
def test_search_on_a_two_node_cluster_uses_both_nodes(cluster, tmp_path):
    """Also: a relative --data-dir and --results-dir reach the trials and the measuring actor. Tune runs each
    trial in its own working directory, here on either node, so they must get absolute paths (the measurer once
    got a relative lock folder and flocked files under the node's working directory, not the run's)."""
    assert non_loopback_listeners(cluster) == []
    image_folder(tmp_path)
    proc = search(cluster, Path("res"), "cluster", data=["--dataset", "folder", "--data-dir", "imgs"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "res" / "cluster" / "trials.csv")
    assert len(trials) == 4 and set(trials["state"]) <= FINAL, trials[["trial", "state", "failure_reason"]]
    assert (trials["state"] == "complete").all(), trials[["trial", "state", "failure_reason"]]
    assert not (cluster.root / "res").exists(), "a node resolved the run's relative path in its own directory"
    # 1 CPU per node, 1 per trial, 2 at once: the two concurrent trials must be on different nodes
    nodes = set(trials["node"].dropna())
    assert len(nodes) == 2, trials[["trial", "node"]]
    # the Ray workers that trained are up now too: still nothing beyond loopback
    assert non_loopback_listeners(cluster) == []


@pytest.mark.slow
def test_a_driver_without_the_token_is_refused_in_one_line(cluster, tmp_path):
    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    env["RAY_AUTH_MODE"] = "disabled"  # as a user who did not set it (Ray never sends a token to an explicit address)
    proc = search(cluster, tmp_path, "refused", env=env, timeout_s=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("cspnas: error:") and "RAY_AUTH_MODE=token" in last, proc.stderr[-2000:]
    assert not (tmp_path / "refused").exists()  # refused before the run directory was made


@pytest.fixture
def no_ray():
    import ray

    if ray.is_initialized():  # run_search reuses a running Ray and would never dial the address
        ray.shutdown()


def test_unreachable_address_fails_fast_and_leaves_no_run(tmp_path, no_ray):
    port = free_port()  # closed again: nothing listens there
    start = time.monotonic()
    with pytest.raises(CspnasError, match=f"cannot join the Ray cluster at 127.0.0.1:{port}.*refused"):
        run_search(SearchSettings(name="nowhere", results_dir=str(tmp_path), address=f"127.0.0.1:{port}"),
                   live=False)
    assert time.monotonic() - start < 15
    assert not (tmp_path / "nowhere").exists()


def test_malformed_address_is_one_clear_line(tmp_path, no_ray):
    with pytest.raises(CspnasError, match="expected HOST:PORT"):
        run_search(SearchSettings(name="bad", results_dir=str(tmp_path), address="headnode"), live=False)
