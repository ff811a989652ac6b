"""DDS security (SROS2) for the duet graphs (issue 11, item 4; docs/security.md).

- `duet security keystore` writes an SROS2 keystore (CA, enclave certificates, governance
  and permissions signed with S/MIME) whose permissions let only teleop / policy publish
  follower commands and only /duet/operator call lifecycle services;
- `duet up --keystore` runs every node in its enclave with Enforce;
- where the DDS has no security plugins (the ros-jazzy wheels' Fast DDS), a secured graph
  refuses to start, in one line, and never runs unsecured;
- where it has them (a system ROS 2), real processes: an unauthenticated process and an
  enclave without permission cannot move the arm or call its lifecycle services; teleop's
  enclave can command it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FOLLOWERS = ("left_follower", "right_follower")


@pytest.fixture(scope="module")
def keystore(tmp_path_factory) -> Path:
    from duet.cli import main

    out = tmp_path_factory.mktemp("sec") / "keystore"
    assert main(["security", "keystore", "--out", str(out), "--graph", "teleop", "--graph", "deploy"]) == 0
    return out


def _may_publish(permissions: Path, topic: str) -> bool:
    """DDS Security permissions semantics: the first rule (in document order) whose
    publish topics match decides; no match: the grant's default."""
    grant = ET.parse(permissions).getroot().find("permissions/grant")
    for rule in grant:
        if rule.tag not in ("allow_rule", "deny_rule"):
            continue
        for t in rule.findall("publish/topics/topic"):
            if fnmatch.fnmatchcase(topic, t.text):
                return rule.tag == "allow_rule"
    return grant.find("default").text == "ALLOW"


def test_keystore_has_an_enclave_per_node_and_only_teleop_and_policy_command_the_followers(keystore):
    from cryptography import x509

    enclaves = keystore / "enclaves" / "duet"
    names = sorted(p.name for p in enclaves.iterdir())
    for n in (
        "left_leader",
        "left_follower",
        "right_follower",
        "cam_high",
        "teleop",
        "policy",
        "sim",
        "operator",
    ):
        assert n in names, names
    ca = x509.load_pem_x509_certificate((keystore / "public" / "ca.cert.pem").read_bytes())
    for n in names:
        d = enclaves / n
        for f in (
            "cert.pem",
            "key.pem",
            "identity_ca.cert.pem",
            "permissions_ca.cert.pem",
            "governance.p7s",
            "permissions.p7s",
            "permissions.xml",
        ):
            assert (d / f).is_file(), f"{n}: {f}"
        assert (d / "key.pem").stat().st_mode & 0o077 == 0, f"{n}: key.pem readable by others"
        cert = x509.load_pem_x509_certificate((d / "cert.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.rfc4514_string() == f"CN=/duet/{n}"
        perm = d / "permissions.xml"
        assert ET.parse(perm).getroot().find("permissions/grant/subject_name").text == f"CN=/duet/{n}"
        for f in FOLLOWERS:
            assert _may_publish(perm, f"rt/{f}/command") == (n in ("teleop", "policy")), f"{n} -> {f}"
            assert _may_publish(perm, f"rq/{f}/change_stateRequest") == (n == "operator"), n
            assert _may_publish(perm, f"rq/{f}/get_stateRequest") == (n == "operator"), n
        assert _may_publish(perm, "rt/diagnostics") and _may_publish(perm, "rt/teleop/state")
        assert _may_publish(perm, "rq/teleop/startRequest")
    assert not (keystore / "private").stat().st_mode & 0o077


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to check S/MIME")
def test_governance_and_permissions_are_smime_signed_by_the_keystore_ca(keystore):
    ca = keystore / "public" / "ca.cert.pem"
    signed = [(keystore / "enclaves" / "governance.p7s", keystore / "enclaves" / "governance.xml")]
    for n in ("teleop", "left_follower", "operator"):
        d = keystore / "enclaves" / "duet" / n
        signed.append((d / "permissions.p7s", d / "permissions.xml"))
    for p7s, xml in signed:
        r = subprocess.run(
            ["openssl", "smime", "-verify", "-text", "-in", str(p7s), "-CAfile", str(ca)], capture_output=True
        )
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout.replace(b"\r\n", b"\n") == xml.read_bytes(), p7s


def test_duet_up_keystore_runs_each_node_in_its_enclave_enforced(keystore, capsys):
    from duet.cli import main

    assert main(["up", "teleop", "--mock", "--dry-run", "--keystore", str(keystore)]) == 0
    cap = capsys.readouterr()
    lines = [ln for ln in cap.out.splitlines() if ln.startswith("/")]
    assert lines and all(
        f"__node:={n} --enclave /duet/{n} " in ln
        for ln in lines
        for n in [ln.split("__node:=")[1].split()[0]]
    )
    assert "DDS security Enforce" in cap.err
    # a keystore without the graph's enclaves: one line naming the enclave and the fix
    empty = keystore.parent / "empty"
    empty.mkdir()
    assert main(["up", "teleop", "--mock", "--dry-run", "--keystore", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "/duet/" in err and "duet security keystore" in err


@cache
def _security_available(keystore: str) -> bool:
    from duet.errors import DuetError
    from duet_ros import security

    try:
        security.check_rmw_security(keystore)
        return True
    except DuetError as e:
        if "no DDS security plugins" in str(e):
            return False
        raise


def test_without_security_plugins_a_secured_graph_refuses_to_start_in_one_line(keystore, tmp_path):
    if _security_available(str(keystore)):
        pytest.skip("this ROS has the DDS security plugins: see the secured-graph test")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "duet.cli",
            "up",
            "bringup",
            "--mock",
            "--only",
            "left_follower",
            "--keystore",
            str(keystore),
            "--log-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("[duet up] network")]
    assert len(err) == 1 and "no DDS security plugins" in err[0] and "docs/security.md" in err[0], r.stderr
    assert not list(tmp_path.glob("*.log")), "no node was started"
    # and a node told to enforce security never runs unsecured instead
    node = _result(_client(keystore, "/duet/left_follower", "start"))
    assert "started" not in node and "security" in node.get("error", ""), node


# ------------------------------------------------------------- with the security plugins

CLIENT = r"""
import json, sys, time
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

enclave, action = sys.argv[1], sys.argv[2]
args = ["x"] + (["--ros-args", "--enclave", enclave] if enclave else [])
out = {}
try:
    rclpy.init(args=args)
    node = Node("duet_security_client")
    def spin_until(pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            rclpy.spin_once(node, timeout_sec=0.05)
        return pred()
    if action == "start":
        out["started"] = True
    elif action == "command":
        from sensor_msgs.msg import JointState
        from duet_ros import convert
        names = json.loads(sys.argv[3])
        mapper = convert.TimeMapper()
        pub = node.create_publisher(JointState, "/left_follower/command",
                                    QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        out["matched"] = spin_until(lambda: pub.get_subscription_count() > 0, 10.0)
        if out["matched"]:
            for _ in range(100):
                pos = [0.3] + [0.0] * (len(names) - 1)
                pub.publish(convert.command_to_msg(names, pos, time.monotonic(), mapper))
                rclpy.spin_once(node, timeout_sec=0.02)
    elif action == "lifecycle":
        from lifecycle_msgs.srv import GetState
        cli = node.create_client(GetState, "/left_follower/get_state")
        out["ready"] = spin_until(cli.service_is_ready, 10.0)
        if out["ready"]:
            fut = cli.call_async(GetState.Request())
            spin_until(fut.done, 10.0)
            out["state"] = fut.result().current_state.label if fut.done() else ""
    elif action == "received":
        from diagnostic_msgs.msg import DiagnosticArray
        seen = {}
        def on_diag(msg):
            for st in msg.status:
                if st.name == "duet/arm/left_follower":
                    seen.update({kv.key: kv.value for kv in st.values})
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        want = int(sys.argv[3])  # wait for a report with at least this many commands received
        spin_until(lambda: int(seen.get("commands_received", -1)) >= want, 15.0)
        out["received"] = int(seen.get("commands_received", -1))
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def _client(keystore: Path | None, enclave: str, action: str, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROS_SECURITY_")}
    if keystore is not None:
        from duet_ros import security

        env.update(security.security_environment(keystore))
    return subprocess.run(
        [sys.executable, "-c", CLIENT, enclave, action, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _result(r: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, r.stdout + r.stderr
    return json.loads(lines[-1])


@pytest.mark.timeout(300)
def test_secured_graph_only_teleop_commands_and_only_the_operator_calls_lifecycle(
    keystore, tmp_path, ros_tools
):
    if not _security_available(str(keystore)):
        pytest.skip(
            "this environment's Fast DDS has no DDS security plugins (ros-jazzy wheels); "
            "run with a system ROS 2 Jazzy (docs/security.md)"
        )
    from duet.hardware.factory import make_arm
    from duet.hardware.rig import load_rig

    names = json.dumps(list(make_arm(load_rig("aloha"), "left_follower", True).features.joint_names))
    up = ros_tools.DuetUp("bringup", "--only", "left_follower", "--keystore", str(keystore), log_dir=tmp_path)
    try:
        op = "/duet/operator"
        # the operator's tools see the arm (lifecycle allowed); nothing commanded it yet
        assert _result(_client(keystore, op, "lifecycle")).get("state") == "active", up.logs()
        assert _result(_client(keystore, op, "received", "0"))["received"] == 0
        # no keystore: not authenticated, never matched
        assert not _result(_client(None, "", "command", names)).get("matched")
        # an enclave without permission (the recorder): its command publisher is refused
        assert not _result(_client(keystore, "/duet/recorder", "command", names)).get("matched")
        # ... and it may not call lifecycle services either
        assert not _result(_client(keystore, "/duet/recorder", "lifecycle")).get("state")
        assert _result(_client(keystore, op, "received", "0"))["received"] == 0
        # teleop's enclave commands the arm
        assert _result(_client(keystore, "/duet/teleop", "command", names)).get("matched")
        assert _result(_client(keystore, op, "received", "1"))["received"] > 0
    finally:
        up.stop()


def test_launch_files_pass_the_keystore_and_the_local_discovery_range(keystore, monkeypatch):
    """launch_support with stand-ins for the launch packages (absent from the wheels
    environment): keystore:= puts every node in its enclave, mock hardware stays local."""
    import importlib
    import types

    class Action:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    values = {"config": "aloha", "use_mock_hardware": "true", "keystore": str(keystore)}

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return values.get(self.name, "")

    mods = {
        "launch": types.SimpleNamespace(LaunchDescription=lambda actions: actions),
        "launch.actions": types.SimpleNamespace(
            DeclareLaunchArgument=Action, LogInfo=Action, OpaqueFunction=Action, SetEnvironmentVariable=Action
        ),
        "launch.substitutions": types.SimpleNamespace(LaunchConfiguration=LaunchConfiguration),
        "launch_ros.actions": types.SimpleNamespace(Node=Action),
    }
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delitem(sys.modules, "duet_ros.launch_support", raising=False)
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    monkeypatch.delenv("ROS_LOCALHOST_ONLY", raising=False)
    support = importlib.import_module("duet_ros.launch_support")
    try:
        actions = support.graph_launch("teleop")()
        assert "keystore" in [a.args[0] for a in actions if a.args and isinstance(a.args[0], str)]
        (opaque,) = [a for a in actions if "function" in a.kwargs]
        out = opaque.kwargs["function"](types.SimpleNamespace(environment={}))
        env = {a.args[0]: a.args[1] for a in out if len(a.args) == 2}
        assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
        assert env["ROS_SECURITY_ENABLE"] == "true" and env["ROS_SECURITY_STRATEGY"] == "Enforce"
        assert env["ROS_SECURITY_KEYSTORE"] == str(keystore.resolve())
        nodes = [a.kwargs for a in out if "executable" in a.kwargs]
        assert len(nodes) == 10 and all(  # 4 arms, 4 cameras, state_publisher, teleop
            n["ros_arguments"] == ["--enclave", f"/duet/{n['name']}"] for n in nodes
        )
        (log,) = [a for a in out if "msg" in a.kwargs]
        assert (
            "discovery range LOCALHOST" in log.kwargs["msg"] and "DDS security Enforce" in log.kwargs["msg"]
        )
        values.update(
            use_mock_hardware="false", keystore=""
        )  # real hardware: the user's range, said in the log
        out = opaque.kwargs["function"](types.SimpleNamespace(environment={}))
        assert not [a for a in out if len(a.args) == 2]
        (log,) = [a for a in out if "msg" in a.kwargs]
        assert "discovery range SUBNET" in log.kwargs["msg"] and "ROS domain" in log.kwargs["msg"]
    finally:
        sys.modules.pop("duet_ros.launch_support", None)
