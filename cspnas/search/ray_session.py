"""Starting Ray locally (loopback only) or joining a cluster (`--address`), with one-line errors."""
from __future__ import annotations

import logging
import os
import socket

from cspnas.errors import CspnasError
from cspnas.search.settings import SearchSettings

CLUSTER_PROBE_TIMEOUT_S = 5.0


def check_cluster_address(address: str) -> None:
    """Fail in one line when nothing listens at --address (ray.init retries such an address for
    minutes). Probes the address Ray will dial: Ray turns 127.0.0.1 / localhost into this
    machine's external IP unless cluster mode is off."""
    from ray._private.services import canonicalize_bootstrap_address

    hint = "check the address (`ray status` on the head node) or drop --address to run locally"
    malformed = f"--address {address}: expected HOST:PORT of the Ray head node, e.g. 10.0.0.5:6379"
    if address.startswith("ray://"):
        target = address[len("ray://"):]
    else:
        try:
            target = canonicalize_bootstrap_address(address) or address
        except ValueError:
            raise CspnasError(malformed) from None
        except ConnectionError as e:  # "auto" and no cluster found
            raise CspnasError(f"--address {address}: {str(e).splitlines()[0]}; {hint}") from None
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise CspnasError(malformed)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CLUSTER_PROBE_TIMEOUT_S).close()
    except OSError as e:
        via = f" (Ray dials {target})" if target != address else ""
        raise CspnasError(f"cannot join the Ray cluster at {address}{via}: "
                          f"{e.strerror or type(e).__name__}; {hint}") from None


def start_ray(settings: SearchSettings, reserved: int = 0) -> None:
    """Start or join Ray; a local session leaves `reserved` cores out (the latency measurer's)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # we keep our own records
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # our searcher reads its own keys
    import ray

    # Tune's end-of-run analysis looks for per-trial logger files we disabled; it only warns.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    kwargs = dict(configure_logging=True, logging_level=logging.WARNING, log_to_driver=False)
    if settings.address:
        check_cluster_address(settings.address)
        try:
            ray.init(address=settings.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            causes, cause = [], e
            while cause is not None:
                causes.append(str(cause))
                cause = cause.__cause__
            if any("InvalidAuthToken" in c or "Unauthenticated" in c for c in causes):
                raise CspnasError(f"the Ray cluster at {settings.address} refused us: it uses token "
                                  "authentication; set RAY_AUTH_MODE=token and give the cluster's token in "
                                  "RAY_AUTH_TOKEN_PATH (a file) or RAY_AUTH_TOKEN") from None
            raise CspnasError(f"cannot join the Ray cluster at {settings.address}: {str(e).splitlines()[0]}; "
                              "check the address (ray status) or drop --address to run locally") from None
    else:
        # Local: nothing may listen beyond loopback. Ray turns a 127.0.0.1 node address into
        # the machine's external IP and then binds its gRPC servers to every interface,
        # unless "cluster mode" is off, in which case it uses loopback and binds only there.
        import ray._private.ray_constants as ray_constants

        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
        # Ray 2.60 turns on token authentication for a new local cluster and says so on every start.
        # We keep the authentication (it also guards loopback against other local users) and drop
        # only that notice: a private cluster that lives and dies with this search needs no advice
        # on opting out. RAY_AUTH_MODE cannot be set here instead: Ray reads it once, at import.
        # --address clusters are untouched: their auth errors and warnings all reach the user.
        notices = logging.getLogger(_RAY_AUTH_LOGGER)
        notices.addFilter(_drop_local_auth_notice)
        try:
            ray.init(num_cpus=os.cpu_count() - reserved, include_dashboard=False, **kwargs)
        finally:
            notices.removeFilter(_drop_local_auth_notice)


_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _drop_local_auth_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Token authentication is enabled for this Ray cluster")
