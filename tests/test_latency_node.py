"""Where latency is measured (cspnas.search.measurer): the gate's per-node scope, the measurer's
fingerprint and the resume rule, and `--latency-node` on a real two-node loopback cluster where
only the second node advertises the resource (the cluster of tests/test_cluster.py)."""
import json
import random
import subprocess
import sys
import threading

import pandas as pd
import pytest
import yaml

from cspnas.errors import CspnasError
from cspnas.search.gate import MeasureGate
from cspnas.search.measurer import (COMPARED, check_same_measurer, fingerprint_here, fingerprint_id, reserved_cores,
                                    training_cores)
from cspnas.cost import LatencySettings
from run_fixture import arch_from_params, sample_params
from test_cluster import JOIN_LOOPBACK, RAY, Cluster, cspnas_cli

RESOURCE = "cspnas_meter"


def test_a_measurement_pauses_only_the_trainers_of_its_node(tmp_path):
    with MeasureGate(tmp_path, node="b").training():  # a trainer on node b
        with MeasureGate(tmp_path, node="a").exclusive():  # measuring on node a: not held up
            pass
        done = threading.Event()

        def measure_on_b():
            with MeasureGate(tmp_path, node="b").exclusive():
                done.set()

        waiter = threading.Thread(target=measure_on_b, daemon=True)
        waiter.start()
        assert not done.wait(0.5), "a measurement on the trainer's node must wait for its step to end"
    assert done.wait(5)  # the trainer left: the measurement runs
    # one stop file for the run, seen by every node's trainers
    MeasureGate(tmp_path).stop_training()
    assert (tmp_path / "stop").exists() and not (tmp_path / "node-a" / "stop").exists()


def test_cores_are_reserved_only_when_two_remain_for_training():
    import os

    cores = sorted(os.sched_getaffinity(0))
    reserved = reserved_cores(1)
    assert reserved == (cores[-1:] if len(cores) >= 3 else [])
    assert training_cores(reserved) == (None if not reserved else cores[:-1])
    assert reserved_cores(len(cores)) == []  # never all of them


def test_a_resume_on_another_measurer_is_refused_in_one_line(tmp_path):
    here = fingerprint_here(LatencySettings())
    assert set(COMPARED) <= set(here) and json.loads(fingerprint_id(here))["hostname"] == here["hostname"]
    check_same_measurer(dict(here, node_id="another ray session"), here, tmp_path)  # same machine: fine
    check_same_measurer(None, here, tmp_path)  # a run from before fingerprints
    with pytest.raises(CspnasError, match=r"different machine \(torch '1.0' -> .*resume where it was measured"):
        check_same_measurer(dict(here, torch="1.0"), here, tmp_path)


@pytest.fixture
def local_ray():
    import ray

    from cspnas.search.ray_session import start_ray
    from cspnas.search.settings import SearchSettings

    start_ray(SearchSettings(name="local"))
    yield ray
    ray.shutdown()


def test_a_local_measurer_runs_on_the_cores_reserved_for_it(local_ray, tmp_path):
    import os

    from cspnas.search.measurer import start_measurer

    core = sorted(os.sched_getaffinity(0))[-1]
    settings = LatencySettings(in_chs=1, input_size=8, min_run_time_s=0.01, warmup=1)
    actor, fp = start_measurer(settings, tmp_path, cores=[core], latency_node=None)
    assert fp["cores"] == 1 and fp["node_id"] == local_ray.get_runtime_context().get_node_id()
    arch = arch_from_params(sample_params(random.Random(0))).to_json(indent=None)  # a small real one
    record = local_ray.get(actor.latency.remote(arch, settings.to_dict(), False))
    assert record["latency_ms"] > 0 and record["latency_iqr_ms"] >= 0 and record["latency_backend"]["name"] == "torch"
    assert json.loads(record["measured_on"]) == json.loads(fingerprint_id(fp))
    confirmed = local_ray.get(actor.confirm.remote([arch, arch], settings.to_dict(), 3))
    assert [c["latency_confirmed_passes"] for c in confirmed] == [3, 3]
    assert all(c["latency_confirmed_ms"] > 0 and c["latency_confirmed_iqr_ms"] >= 0 for c in confirmed)
    assert not list(tmp_path.iterdir())  # ungated: no lock file was made


class MeterCluster(Cluster):
    """Head (1 CPU) and a second node (1 CPU) that alone advertises RESOURCE."""

    def start(self) -> None:
        common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
                  "--temp-dir", str(self.root / "ray"), "--dashboard-agent-listen-port", None]
        self._start("head", [RAY, "start", "--head", "--port", str(self.port), "--include-dashboard", "false",
                             "--disable-usage-stats", *common])
        self._start("meter", [sys.executable, "-c", JOIN_LOOPBACK, "start", "--address", self.address, *common,
                              "--resources", json.dumps({RESOURCE: 1})])

    def node_with(self, resource: str) -> str:
        code = ("import json, ray; ray.init(address=%r, log_to_driver=False); "
                "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive'] and %r in n['Resources']]))"
                % (self.address, resource))
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])[0]


@pytest.fixture(scope="module")
def meter_cluster():
    c = MeterCluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


def search(cluster, results, name, *extra, timeout_s=400):
    return cspnas_cli(["search", "--address", cluster.address, "--budget", "3", "--epochs", "1", "--concurrency",
                       "1", "--sampler", "random", "--results-dir", str(results), "--name", name, "--device", "cpu",
                       "--no-dashboard", *extra], timeout_s, env=cluster.env)


@pytest.mark.slow
def test_latency_is_measured_on_the_latency_node_and_nothing_trains_there(meter_cluster, tmp_path):
    proc = search(meter_cluster, tmp_path, "meter", "--latency-node", RESOURCE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "meter"
    config = yaml.safe_load((run / "config.yaml").read_text())
    meter_node = meter_cluster.node_with(RESOURCE)
    assert config["measured_on"]["node_id"] == meter_node
    assert config["settings"]["latency_node"] == RESOURCE
    trials = pd.read_csv(run / "trials.csv")
    assert (trials["state"] == "complete").all(), trials[["trial", "state", "failure_reason"]]
    assert trials["node"].notna().all() and meter_node not in set(trials["node"])  # never trained on
    assert trials["measured_on"].map(json.loads).eq(json.loads(fingerprint_id(config["measured_on"]))).all()
    front = pd.read_csv(run / "pareto.csv")
    assert len(front) and front["confirmed"].all()  # confirmed through the same measurer


@pytest.mark.slow
def test_a_resource_no_node_has_is_one_line_and_writes_nothing(meter_cluster, tmp_path):
    proc = search(meter_cluster, tmp_path, "nowhere", "--latency-node", "jetson", timeout_s=200)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("cspnas: error: --latency-node jetson: no node") and RESOURCE in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "nowhere").exists()
