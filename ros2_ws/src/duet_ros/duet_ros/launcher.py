"""`duet up`: the launch graph without the launch packages (laptops, CI).

Starts each node of an expanded graph (duet_ros.graph) as a subprocess of its console
script, with exactly what launch_ros would pass: the graph's parameter files in order,
then a generated file with the node's graph parameters (rig, use_mock_hardware, device)
and any overrides. ROS-free itself: the children are the ROS processes.

Network: a graph on mock or sim hardware keeps its DDS traffic on this host
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST for every node) unless the user set the range
(or the deprecated ROS_LOCALHOST_ONLY); every graph says which range and ROS domain its
nodes use (network_summary), a real-hardware graph first of all.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from duet.errors import DuetError
from duet_ros import security
from duet_ros.graph import NodeSpec


def find_executable(name: str) -> str:
    """A console script: beside this Python first (the venv), then on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise DuetError(
        f"executable {name!r} not found; install the nodes with: pip install --no-deps -e ros2_ws/src/duet_ros"
    )


def node_argv(
    spec: NodeSpec, params_file: Path, executable: str | None = None, enclave: str = ""
) -> list[str]:
    argv = [executable or find_executable(spec.executable), "--ros-args", "-r", f"__node:={spec.name}"]
    if enclave:  # DDS security: the process runs as this enclave of the keystore (duet_ros.security)
        argv += ["--enclave", enclave]
    for f in spec.param_files:
        argv += ["--params-file", str(f)]
    return argv + ["--params-file", str(params_file)]


DISCOVERY_RANGE = "ROS_AUTOMATIC_DISCOVERY_RANGE"
LOCALHOST_ONLY = "ROS_LOCALHOST_ONLY"  # deprecated in Jazzy; still honoured by rcl


def discovery_environment(env: dict[str, str], local: bool) -> dict[str, str]:
    """The variables to add to `env` for a graph's nodes: {DISCOVERY_RANGE: LOCALHOST} when
    `local` (mock / sim hardware) and the user set neither the range nor ROS_LOCALHOST_ONLY."""
    if local and not env.get(DISCOVERY_RANGE) and not env.get(LOCALHOST_ONLY):
        return {DISCOVERY_RANGE: "LOCALHOST"}
    return {}


def network_summary(env: dict[str, str], set_by_duet: bool = False) -> str:
    """One line: the discovery range and ROS domain of nodes started with `env`."""
    rng = env.get(DISCOVERY_RANGE, "")
    if rng:
        how = (
            "(set by duet for mock hardware: this host only)" if set_by_duet else f"(from {DISCOVERY_RANGE})"
        )
    elif env.get(LOCALHOST_ONLY) == "1":
        rng, how = "LOCALHOST", f"(from the deprecated {LOCALHOST_ONLY}=1)"
    else:
        rng, how = (
            "SUBNET",
            f"(ROS default: every host of the subnet; {DISCOVERY_RANGE}=LOCALHOST keeps it on this host)",
        )
    dom = env.get("ROS_DOMAIN_ID", "")
    domain = f"ROS domain {dom}" if dom else "ROS domain 0 (ROS_DOMAIN_ID unset)"
    if env.get("ROS_SECURITY_ENABLE", "").lower() == "true":
        sec = f"DDS security {env.get('ROS_SECURITY_STRATEGY', 'Permissive')}, keystore {env.get('ROS_SECURITY_KEYSTORE', '')}"
    else:
        sec = "no DDS security (see docs/security.md)"
    return f"discovery range {rng} {how}, {domain}, {sec}"


def node_params_yaml(
    spec: NodeSpec,
    overrides: dict[str, Any] | None = None,
    hosted_overrides: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The node's parameter file; a host node's (NodeSpec.hosted) also holds a section per
    hosted node (its graph parameters and overrides), which the host hands to each of them."""
    params = {**spec.parameters, **(overrides or {})}
    doc = {spec.name: {"ros__parameters": params}}
    for h in spec.hosted:
        doc[h.name] = {"ros__parameters": {**h.parameters, **(hosted_overrides or {}).get(h.name, {})}}
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class Child:
    spec: NodeSpec
    argv: list[str]
    proc: subprocess.Popen | None = None
    log: IO[bytes] | None = None
    reported: bool = False


@dataclass
class GraphRunner:
    specs: list[NodeSpec]
    overrides: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # node name (or "*") -> params; others ignored
    log_dir: Path | None = None
    env: dict[str, str] | None = None
    keystore: Path | None = None  # SROS2 keystore (duet_ros.security): every node in its enclave, Enforce
    children: list[Child] = field(default_factory=list)

    def __post_init__(self):
        self._tmp = Path(tempfile.mkdtemp(prefix="duet-up-"))
        self.local = bool(self.specs)  # every node on mock / sim hardware: keep the graph on this host
        for spec in self.specs:
            over = {**self.overrides.get("*", {}), **self.overrides.get(spec.name, {})}
            self.local = self.local and bool({**spec.parameters, **over}.get("use_mock_hardware", False))
            hosted = {
                h.name: {**self.overrides.get("*", {}), **self.overrides.get(h.name, {})} for h in spec.hosted
            }
            pf = self._tmp / f"{spec.name}.yaml"
            pf.write_text(node_params_yaml(spec, over, hosted))
            enclave = security.enclave_of(spec.name) if self.keystore is not None else ""
            self.children.append(Child(spec, node_argv(spec, pf, enclave=enclave)))

    def environment(self) -> dict[str, str]:
        """The nodes' environment: `env` (default: ours), unbuffered output, and for a graph
        on mock / sim hardware the LOCALHOST discovery range unless the user set one."""
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
        env.update(discovery_environment(env, self.local))
        if self.keystore is not None:
            env.update(security.security_environment(self.keystore))
        return env

    def network(self) -> str:
        """The startup line: discovery range, ROS domain and security of the nodes."""
        base = dict(os.environ if self.env is None else self.env)
        return network_summary(self.environment(), bool(discovery_environment(base, self.local)))

    def start(self) -> None:
        env = self.environment()
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for c in self.children:
            out = None
            if self.log_dir is not None:
                c.log = open(self.log_dir / f"{c.spec.name}.log", "ab")  # noqa: SIM115 - closed in stop()
                out = c.log
            c.proc = subprocess.Popen(c.argv, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)

    def poll(self) -> list[tuple[str, int]]:
        """Children that exited since the last poll: (name, return code)."""
        out = []
        for c in self.children:
            if c.proc is not None and not c.reported and c.proc.poll() is not None:
                c.reported = True
                out.append((c.spec.name, c.proc.returncode))
        return out

    def running(self) -> list[str]:
        return [c.spec.name for c in self.children if c.proc is not None and c.proc.poll() is None]

    def pid(self, name: str) -> int:
        for c in self.children:
            if c.spec.name == name and c.proc is not None:
                return c.proc.pid
        raise KeyError(name)

    def stop(self, timeout: float = 8.0) -> dict[str, int]:
        """SIGINT every node (each goes to its safe state), then SIGTERM / SIGKILL stragglers."""
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            for c in live:
                if c.proc.poll() is None:
                    try:
                        c.proc.send_signal(sig)
                    except ProcessLookupError:
                        pass
            end = time.monotonic() + wait
            while time.monotonic() < end and any(c.proc.poll() is None for c in live):
                time.sleep(0.05)
            live = [c for c in live if c.proc.poll() is None]
            if not live:
                break
        for c in self.children:
            if c.log is not None:
                c.log.close()
                c.log = None
        shutil.rmtree(self._tmp, ignore_errors=True)
        return {c.spec.name: c.proc.returncode for c in self.children if c.proc is not None}

    def wait(self) -> int:
        """Until every node exited (or Ctrl-C / SIGTERM: stop them all). Exit status: the
        worst child status."""
        stop_requested = False

        def _request_stop(signum, frame):
            nonlocal stop_requested
            stop_requested = True

        old = {s: signal.signal(s, _request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.running() and not stop_requested:
                for name, rc in self.poll():
                    print(f"[duet up] node {name} exited with status {rc}", file=sys.stderr, flush=True)
                time.sleep(0.1)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        codes = self.stop()
        for name, rc in self.poll():
            if rc not in (0, -signal.SIGINT):
                print(f"[duet up] node {name} exited with status {rc}", file=sys.stderr, flush=True)
        bad = [rc for rc in codes.values() if rc not in (0, -signal.SIGINT, 130)]
        return 1 if bad else 0
