"""DDS security (SROS2) for duet graphs: a keystore with one enclave per node process,
written by duet itself (the sros2 package, `ros2 security`, is not in the registries).
ROS-free; keys, certificates and S/MIME signatures come from the `cryptography` package.

    duet security keystore --out ~/duet_keystore           every graph of launch/graph.yaml
    duet up teleop --keystore ~/duet_keystore               each node in its enclave, Enforce

The keystore has the layout `ros2 security create_keystore` / `create_enclave` write
(docs/security.md), so ROS_SECURITY_KEYSTORE points at it and `ros2 security` can extend it:

    public/ca.cert.pem (+ identity_ca / permissions_ca links)   one CA, EC P-256, 10 years
    private/ca.key.pem (+ links)                                keep this off the robot
    enclaves/governance.xml, governance.p7s                     signed by the CA
    enclaves/duet/<node>/ cert.pem key.pem permissions.xml permissions.p7s
                          identity_ca.cert.pem permissions_ca.cert.pem governance.p7s

Governance: no unauthenticated participants, join access control, discovery, liveliness
and data encrypted, read and write access control on every topic. Permissions (first
matching rule wins, then DENY): every enclave may publish and subscribe any topic EXCEPT
  - the follower command topics (rt/<follower>/command): publish only from the enclaves of
    COMMAND_KINDS (teleop, policy);
  - the lifecycle services of every node (rq/<node>/change_state... Request): called only
    from the operator enclave (/duet/operator: `ros2 lifecycle`, rqt, the operator's scripts).
An enclave is per process (a ROS context): the sim host, which runs every sim arm and
camera node in one process, has one enclave for all of them.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from duet.errors import ConfigError, DuetError

ROOT = "/duet"  # every duet enclave lives under it
OPERATOR = "operator"  # /duet/operator: the operator's tools (lifecycle calls)
COMMAND_KINDS = ("teleop", "policy")  # node kinds that may publish follower commands
LIFECYCLE_SERVICES = (
    "change_state",
    "get_state",
    "get_available_states",
    "get_available_transitions",
    "get_transition_graph",
)
ENCLAVE_FILES = (
    "cert.pem",
    "key.pem",
    "identity_ca.cert.pem",
    "permissions_ca.cert.pem",
    "governance.p7s",
    "permissions.p7s",
)
MAX_DOMAIN_ID = 232  # Fast DDS: domain ids 0..232
CA_NAME = "duet keystore CA"


def enclave_of(process: str) -> str:
    """The enclave of a node process (its node name, or the host node's)."""
    return f"{ROOT}/{process}"


@dataclass(frozen=True)
class EnclavePlan:
    """One enclave: a node process of a graph, or the operator's tools."""

    name: str  # enclave path, e.g. /duet/teleop
    nodes: tuple[str, ...]  # the ROS nodes in that process
    publish_commands: bool  # may publish follower commands
    call_lifecycle: bool  # may call lifecycle services


@dataclass(frozen=True)
class GraphPolicy:
    enclaves: tuple[EnclavePlan, ...]
    followers: tuple[str, ...]  # follower arm names: their command topics are protected
    nodes: tuple[str, ...]  # every node name: their lifecycle services are protected


def graph_policy(graphs: list[str] | None = None, rig: str = "aloha", description=None) -> GraphPolicy:
    """The enclaves of the given graphs (default: every graph) on a rig, for real and for
    mock / sim hardware (a sim host process is an enclave of its own)."""
    from duet.hardware.rig import load_rig
    from duet_ros.graph import expand, load_graph

    desc = description or load_graph()
    names = graphs or desc.graph_names()
    rig_cfg = load_rig(rig)
    procs: dict[str, EnclavePlan] = {}
    nodes: list[str] = []
    for g in names:
        for mock in (False, True):
            for spec in expand(g, rig, mock, desc):
                kinds = {spec.kind, *(h.kind for h in spec.hosted)}
                plan = EnclavePlan(
                    enclave_of(spec.name), tuple(spec.node_names()), bool(kinds & set(COMMAND_KINDS)), False
                )
                procs.setdefault(plan.name, plan)
                nodes += [n for n in spec.node_names() if n not in nodes]
    for kind in desc.kinds.values():  # host processes (the sim host) on a rig of their backend
        if kind.hosts and enclave_of(kind.node_name) not in procs:
            hosted = [
                n for n in nodes if n in {a.name for a in rig_cfg.arms} | {c.name for c in rig_cfg.cameras}
            ]
            procs[enclave_of(kind.node_name)] = EnclavePlan(
                enclave_of(kind.node_name),
                (kind.node_name, *hosted),
                bool(set(kind.hosts) & set(COMMAND_KINDS)),
                False,
            )
            nodes.append(kind.node_name)
    procs[enclave_of(OPERATOR)] = EnclavePlan(enclave_of(OPERATOR), (), False, True)
    followers = tuple(a.name for a in rig_cfg.arms if a.role == "follower")
    return GraphPolicy(tuple(procs.values()), followers, tuple(nodes))


# --------------------------------------------------------------------------- XML


def _domains_xml(domain: int | None, indent: str) -> str:
    if domain is None:
        inner = f"<id_range><min>0</min><max>{MAX_DOMAIN_ID}</max></id_range>"
    else:
        inner = f"<id>{int(domain)}</id>"
    return f"{indent}<domains>{inner}</domains>\n"


def governance_xml(domain: int | None = None) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<dds xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:noNamespaceSchemaLocation="http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_governance.xsd">\n'
        "  <domain_access_rules>\n"
        "    <domain_rule>\n"
        + _domains_xml(domain, "      ")
        + "      <allow_unauthenticated_participants>false</allow_unauthenticated_participants>\n"
        "      <enable_join_access_control>true</enable_join_access_control>\n"
        "      <discovery_protection_kind>ENCRYPT</discovery_protection_kind>\n"
        "      <liveliness_protection_kind>ENCRYPT</liveliness_protection_kind>\n"
        "      <rtps_protection_kind>ENCRYPT</rtps_protection_kind>\n"
        "      <topic_access_rules>\n"
        "        <topic_rule>\n"
        "          <topic_expression>*</topic_expression>\n"
        "          <enable_discovery_protection>true</enable_discovery_protection>\n"
        "          <enable_liveliness_protection>true</enable_liveliness_protection>\n"
        "          <enable_read_access_control>true</enable_read_access_control>\n"
        "          <enable_write_access_control>true</enable_write_access_control>\n"
        "          <metadata_protection_kind>ENCRYPT</metadata_protection_kind>\n"
        "          <data_protection_kind>ENCRYPT</data_protection_kind>\n"
        "        </topic_rule>\n"
        "      </topic_access_rules>\n"
        "    </domain_rule>\n"
        "  </domain_access_rules>\n"
        "</dds>\n"
    )


def command_topic(follower: str) -> str:
    """The DDS topic of a follower's command topic (ROS topics are rt/<name>)."""
    return f"rt/{follower}/command"


def lifecycle_request_topics(node: str) -> list[str]:
    """The DDS topics a client publishes to call the node's lifecycle services."""
    return [f"rq/{node}/{s}Request" for s in LIFECYCLE_SERVICES]


def denied_publications(plan: EnclavePlan, policy: GraphPolicy) -> list[str]:
    """The DDS topics this enclave may not publish to."""
    out: list[str] = []
    if not plan.publish_commands:
        out += [command_topic(f) for f in policy.followers]
    if not plan.call_lifecycle:
        for n in policy.nodes:
            out += lifecycle_request_topics(n)
    return out


def permissions_xml(
    plan: EnclavePlan,
    policy: GraphPolicy,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    domain: int | None = None,
) -> str:
    def stamp(t: datetime.datetime) -> str:
        return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")

    deny = denied_publications(plan, policy)
    rules = ""
    if deny:
        topics = "".join(f"            <topic>{escape(t)}</topic>\n" for t in deny)
        rules += (
            "      <deny_rule>\n"
            + _domains_xml(domain, "        ")
            + "        <publish>\n          <topics>\n"
            + topics
            + "          </topics>\n        </publish>\n"
            "      </deny_rule>\n"
        )
    rules += (
        "      <allow_rule>\n"
        + _domains_xml(domain, "        ")
        + "        <publish>\n          <topics>\n            <topic>*</topic>\n          </topics>\n        </publish>\n"
        "        <subscribe>\n          <topics>\n            <topic>*</topic>\n          </topics>\n        </subscribe>\n"
        "      </allow_rule>\n"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<dds xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:noNamespaceSchemaLocation="http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_permissions.xsd">\n'
        "  <permissions>\n"
        f'    <grant name="{escape(plan.name)}">\n'
        f"      <subject_name>CN={escape(plan.name)}</subject_name>\n"
        f"      <validity>\n        <not_before>{stamp(not_before)}</not_before>\n"
        f"        <not_after>{stamp(not_after)}</not_after>\n      </validity>\n"
        + rules
        + "      <default>DENY</default>\n"
        "    </grant>\n"
        "  </permissions>\n"
        "</dds>\n"
    )


# --------------------------------------------------------------------------- keys


def _crypto():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import pkcs7
    except ImportError:
        raise DuetError(
            "keystore generation needs the cryptography package: pip install -r requirements/base.txt"
        ) from None
    return x509, hashes, serialization, ec, pkcs7


def _key_and_cert(subject: str, *, ca_cert=None, ca_key=None, days: int = 3650):
    """An EC P-256 key (DDS Security 9.3.1: prime256v1) and its certificate: self-signed CA
    when ca_key is None, else signed by the CA."""
    x509, hashes, _, ec, _ = _crypto()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    is_ca = ca_key is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if is_ca else ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # small clock skew between hosts
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=1 if is_ca else None), critical=is_ca)
    )
    return key, builder.sign(key if is_ca else ca_key, hashes.SHA256())


def smime_sign(data: bytes, cert, key) -> bytes:
    """Detached, text-mode S/MIME signature (what Fast DDS reads for governance.p7s and
    permissions.p7s; the same options as sros2)."""
    _, hashes, serialization, _, pkcs7 = _crypto()
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(data)
        .add_signer(cert, key, hashes.SHA256())
        .sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.Text, pkcs7.PKCS7Options.DetachedSignature])
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _link(path: Path, target: Path) -> None:
    rel = os.path.relpath(target, path.parent)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(rel)


def create_keystore(
    out: str | Path, policy: GraphPolicy, domain: int | None = None, days: int = 3650
) -> list[str]:
    """Write (or extend) the keystore at `out` for `policy`; returns the enclave names.
    An existing CA is kept (so are enclave keys that exist); governance and permissions are
    rewritten and signed again, so a keystore follows a changed graph."""
    x509, _, serialization, _, _ = _crypto()
    if domain is not None and not 0 <= domain <= MAX_DOMAIN_ID:
        raise ConfigError(f"--domain {domain}: a ROS domain id is within 0..{MAX_DOMAIN_ID}")
    ks = Path(out).expanduser()
    pub, priv, encl = ks / "public", ks / "private", ks / "enclaves"
    ca_cert_path, ca_key_path = pub / "ca.cert.pem", priv / "ca.key.pem"
    if ca_cert_path.is_file() and ca_key_path.is_file():
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    elif ks.exists() and any(ks.iterdir()):
        raise ConfigError(
            f"{ks} exists and is not a keystore (no public/ca.cert.pem): give an empty or new directory"
        )
    else:
        ca_key, ca_cert = _key_and_cert(CA_NAME, days=days)
        _write(ca_key_path, _pem_key(ca_key), private=True)
        _write(ca_cert_path, _pem_cert(ca_cert))
    os.chmod(priv, 0o700)
    for d, name in ((pub, "ca.cert.pem"), (priv, "ca.key.pem")):
        for role in ("identity_ca", "permissions_ca"):
            _link(d / name.replace("ca", role, 1), d / name)
    gov = governance_xml(domain).encode()
    _write(encl / "governance.xml", gov)
    _write(encl / "governance.p7s", smime_sign(gov, ca_cert, ca_key))
    now = datetime.datetime.now(datetime.UTC)
    names = []
    for plan in policy.enclaves:
        d = encl / plan.name.lstrip("/")
        if not ((d / "cert.pem").is_file() and (d / "key.pem").is_file()):
            key, cert = _key_and_cert(plan.name, ca_cert=ca_cert, ca_key=ca_key, days=days)
            _write(d / "key.pem", _pem_key(key), private=True)
            _write(d / "cert.pem", _pem_cert(cert))
        perm = permissions_xml(
            plan, policy, now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days), domain
        ).encode()
        _write(d / "permissions.xml", perm)
        _write(d / "permissions.p7s", smime_sign(perm, ca_cert, ca_key))
        _link(d / "identity_ca.cert.pem", pub / "identity_ca.cert.pem")
        _link(d / "permissions_ca.cert.pem", pub / "permissions_ca.cert.pem")
        _link(d / "governance.p7s", encl / "governance.p7s")
        names.append(plan.name)
    return names


def _pem_key(key) -> bytes:
    _, _, serialization, _, _ = _crypto()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert) -> bytes:
    _, _, serialization, _, _ = _crypto()
    return cert.public_bytes(serialization.Encoding.PEM)


# --------------------------------------------------------------------------- running secured


def security_environment(keystore: str | Path) -> dict[str, str]:
    """The variables that make rcl run a process secured, with this keystore, or not at all."""
    return {
        "ROS_SECURITY_KEYSTORE": str(Path(keystore).expanduser().resolve()),
        "ROS_SECURITY_ENABLE": "true",
        "ROS_SECURITY_STRATEGY": "Enforce",
    }


def check_enclaves(keystore: str | Path, processes: list[str]) -> None:
    """ConfigError naming the first node process whose enclave is missing or incomplete."""
    ks = Path(keystore).expanduser()
    for p in processes:
        d = ks / "enclaves" / enclave_of(p).lstrip("/")
        missing = [f for f in ENCLAVE_FILES if not (d / f).is_file()]
        if missing:
            raise ConfigError(
                f"keystore {ks}: enclave {enclave_of(p)} lacks {', '.join(missing)}; "
                f"generate it with: duet security keystore --out {ks}"
            )


NO_SECURITY_MARK = "doesn't have the security libraries"


def check_rmw_security(keystore: str | Path, process: str = OPERATOR, timeout: float = 60.0) -> None:
    """Start one rclpy context in `process`'s enclave (a child process, as a node would):
    DuetError in one line when this environment's DDS cannot run secured (the Fast DDS of
    the ros-jazzy wheels is built without its security plugins)."""
    env = {**os.environ, **security_environment(keystore)}
    code = (
        "import rclpy, sys\n"
        "rclpy.init(args=['x', '--ros-args', '--enclave', sys.argv[1]])\n"
        "n = rclpy.create_node('duet_security_check')\n"
        "n.destroy_node(); rclpy.shutdown()\n"
    )
    try:
        r = subprocess.run(
            [sys.executable, "-c", code, enclave_of(process)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise DuetError(
            f"a secured test node (enclave {enclave_of(process)}) did not start within {timeout:g} s"
        ) from None
    if r.returncode == 0:
        return
    text = r.stdout + r.stderr
    if NO_SECURITY_MARK in text:
        raise DuetError(
            "this environment's Fast DDS has no DDS security plugins (the ros-jazzy wheels are built "
            "without -DSECURITY=ON): run secured graphs with a system ROS 2 Jazzy (docs/security.md)"
        )
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["no output"]
    raise DuetError(f"a secured test node (enclave {enclave_of(process)}) failed: {last[0].strip()}")
