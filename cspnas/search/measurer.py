"""Where latency is measured: a Ray actor of its own, one per search.

The driver sends the measurer an architecture (JSON) and the LatencySettings; it builds the model
and times it with whatever backend the settings name (cspnas.cost.backends), then returns the
numbers. Params, MACs and memory stay in the driver: they are counted, not timed.

Placement and the gate (the rule):
- local search (no --address): the measurer runs on this machine, pinned to reserved cores (the
  last `--latency-threads` cores) when at least 2 cores are left for training; Ray is then started
  with that many fewer CPUs and the trainers pin themselves to the other cores, so nothing is paused.
  On a smaller machine (2 cores) there is nothing to spare: the measurer shares the trainers'
  cores and pauses them while it times (the MeasureGate).
- a joined cluster (--address, no --latency-node): the measurer runs on the driver's node, sharing
  its cores, and pauses the trainers of that node only (gate files are per node).
- --latency-node RESOURCE: the measurer runs on the node advertising RESOURCE and holds all of that
  node's CPUs and GPUs, so Ray never places a trial there; nothing needs pausing.
A measurement on a GPU with trainers on the same GPU is gated whatever the cores.

Each measurer reports its fingerprint (host, CPU model, cores, library versions, threads): stored in
config.yaml and with every trial; a resume whose measurer differs is refused (latencies would not
compare).
"""
from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from cspnas.cost.settings import LatencySettings, cpu_cores
from cspnas.errors import CspnasError

MIN_TRAINING_CORES = 2  # reserve cores for the measurer only when at least this many remain for training
START_TIMEOUT_S = 120.0  # the measurer must be up by then (a node whose CPUs are all held never places it)
# what makes two measurers' latencies comparable (node ids and core lists change with every Ray start)
COMPARED = ("hostname", "cpu_model", "cpu_count", "torch", "onnxruntime", "threads", "device")


def reserved_cores(threads: int) -> list[int]:
    """Cores kept for a local measurer: the last `threads` of this process's, if MIN_TRAINING_CORES remain."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return cores[-threads:] if len(cores) - threads >= MIN_TRAINING_CORES else []


def training_cores(reserved: list[int]) -> list[int] | None:
    """The cores local trainers pin themselves to (None: no pinning, nothing reserved)."""
    if not reserved:
        return None
    return sorted(set(os.sched_getaffinity(0)) - set(reserved))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint_here(settings: LatencySettings) -> dict[str, Any]:
    """This process's machine as a latency measurer."""
    import torch

    try:
        import onnxruntime
        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # outside Ray
        node = ""
    return {"hostname": socket.gethostname(), "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
            "cores": cpu_cores(), "torch": str(torch.__version__), "onnxruntime": ort and str(ort), "threads": settings.threads,
            "device": settings.device, "node_id": node}


def fingerprint_id(fp: dict[str, Any]) -> str:
    """The comparable part of a fingerprint as one compact JSON string (stored with every trial)."""
    return json.dumps({k: fp.get(k) for k in COMPARED}, sort_keys=True, separators=(",", ":"))


def check_same_measurer(recorded: dict[str, Any] | None, now: dict[str, Any], run_dir: Path) -> None:
    """Refuse a resume whose latencies would be measured on another machine or software than the run's."""
    if not recorded:
        return  # a run written before fingerprints were recorded
    differ = [k for k in COMPARED if recorded.get(k) != now.get(k)]
    if differ:
        what = ", ".join(f"{k} {recorded.get(k)!r} -> {now.get(k)!r}" for k in differ)
        raise CspnasError(f"--resume {run_dir}: latency would be measured on a different machine ({what}), so its "
                          "latencies would not compare with the run's; resume where it was measured (or with "
                          "--latency-node naming that machine), or start a new search with another --name")


def latency_record(lat, fp_id: str) -> dict[str, Any]:
    """A Latency (cspnas.cost.latency) as the trial attributes the search records."""
    return {"latency_ms": lat.ms, "latency_iqr_ms": lat.iqr_ms, "latency_runs": lat.runs,
            "latency_noisy": lat.noisy, "latency_backend": lat.backend, "measured_on": fp_id}


def _iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


class Measurer:
    """The measuring process (a Ray actor; see the module docstring for where it runs)."""

    def __init__(self, cores: list[int] | None, lock_dir: str, settings: dict[str, Any], calibration=None):
        self.calibration = calibration  # int8: the search's training images (numpy), else None
        if cores:
            os.sched_setaffinity(0, cores)
        self.lock_dir = lock_dir
        self.fp = fingerprint_here(LatencySettings.from_dict(settings))

    def fingerprint(self) -> dict[str, Any]:
        return self.fp

    def _model(self, arch_json: str):
        import torch

        from cspnas.models import build_model
        from cspnas.space import ArchConfig

        torch.manual_seed(0)  # the driver's CostMeter builds with the same seed
        return build_model(ArchConfig.from_json(arch_json))

    def latency(self, arch_json: str, settings: dict[str, Any], gated: bool) -> dict[str, Any]:
        """Time one architecture; with `gated`, the trainers of this node are paused meanwhile."""
        import contextlib

        from cspnas.cost import measure_latency
        from cspnas.search.gate import MeasureGate

        model = self._model(arch_json)
        lat_settings = LatencySettings.from_dict(settings)
        gate = MeasureGate(self.lock_dir, node=self.fp["node_id"]).exclusive() if gated else contextlib.nullcontext()
        start = time.perf_counter()
        with gate:
            waited = time.perf_counter() - start  # for trainers to pause (the driver's accounting)
            lat = measure_latency(model, lat_settings, self.calibration)
        return {**latency_record(lat, fingerprint_id(self.fp)), "cost_wait_seconds": waited}

    def confirm(self, arch_jsons: list[str], settings: dict[str, Any], rounds: int) -> list[dict[str, Any]]:
        """Re-time several architectures in `rounds` interleaved passes (each pass in another order:
        rotated, every other one reversed), so slow drift of the machine hits all of them alike.
        Per architecture: the median of the passes' latencies, and as its spread the larger of the
        passes' spread (IQR of their medians) and a pass's own IQR (the median of those)."""
        from cspnas.cost import measure_latency

        lat_settings = LatencySettings.from_dict(settings)
        models = [self._model(a) for a in arch_jsons]
        medians: list[list[float]] = [[] for _ in models]
        iqrs: list[list[float]] = [[] for _ in models]
        runs = [0] * len(models)
        n = len(models)
        for r in range(rounds):
            order = [(i + r) % n for i in range(n)]
            for i in reversed(order) if r % 2 else order:
                lat = measure_latency(models[i], lat_settings, self.calibration)
                medians[i].append(lat.ms)
                iqrs[i].append(lat.iqr_ms)
                runs[i] += lat.runs
        return [{"latency_confirmed_ms": statistics.median(m),
                 "latency_confirmed_iqr_ms": max(_iqr(m), statistics.median(q)),
                 "latency_confirmed_runs": runs[i], "latency_confirmed_passes": len(m)}
                for i, (m, q) in enumerate(zip(medians, iqrs))]


def _latency_nodes(resource: str) -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(resource, 0) > 0]


def check_latency_node(resource: str) -> dict[str, Any]:
    """The alive node advertising `resource` (Ray must be joined); one line when there is none."""
    import ray

    nodes = _latency_nodes(resource)
    if not nodes:
        have = sorted({k for n in ray.nodes() if n.get("Alive") for k in n.get("Resources", {})
                       if k not in ("CPU", "GPU", "memory", "object_store_memory") and not k.startswith("node:")})
        raise CspnasError(f"--latency-node {resource}: no node of the Ray cluster advertises the resource "
                          f"{resource!r} (custom resources: {', '.join(have) or 'none'}); start the measuring "
                          f"node with `ray start --address HEAD:PORT --resources '{{\"{resource}\": 1}}'`")
    if len(nodes) > 1:
        raise CspnasError(f"--latency-node {resource}: {len(nodes)} nodes advertise {resource!r}; give the resource "
                          "to exactly one node, the one latency is measured on")
    return nodes[0]


def start_measurer(latency: LatencySettings, lock_dir: Path, *, cores: list[int], latency_node: str | None,
                   calibration=None):
    """The search's measuring actor, started and answering (Ray must be started). Returns its handle
    and fingerprint. Raises CspnasError (one line) when it cannot be placed."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if latency_node:
        node = check_latency_node(latency_node)
        res = node["Resources"]
        # hold the whole node: no trial can be placed on it while the search runs
        options = dict(num_cpus=res.get("CPU", 0), num_gpus=res.get("GPU", 0),
                       resources={latency_node: res[latency_node]},
                       scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
        where = f"the node advertising {latency_node!r}"
    else:
        here = ray.get_runtime_context().get_node_id()
        options = dict(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
        where = "this machine"
    actor = ray.remote(Measurer).options(max_restarts=1, **options).remote(
        cores or None, str(lock_dir), latency.to_dict(), calibration)
    try:
        fp = ray.get(actor.fingerprint.remote(), timeout=START_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        ray.kill(actor)
        raise CspnasError(f"the latency measurer did not start on {where} within {START_TIMEOUT_S:.0f} s "
                          "(are its CPUs held by another search?); free that node or drop --latency-node") from None
    return actor, fp
