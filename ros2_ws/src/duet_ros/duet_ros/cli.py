"""`duet up GRAPH`: start a node graph of launch/graph.yaml without ros2 launch.

    duet up teleop --mock                       every arm, camera and the teleop node, mock hardware
    duet up teleop --sim                        the same on the MuJoCo sim rig (--mock --config aloha_sim)
    duet up bringup --config my_rig.yaml        arms and cameras of a rig YAML, real hardware
    duet up teleop --mock --only teleop         one node of the graph, same parameters
    duet up teleop --mock --set left_follower:fault_scenario=lossy_1pct
    duet up teleop --mock --dry-run             print the node command lines
    duet up record --mock --dataset demos.zarr --task fold     graph arguments (launch/graph.yaml)
    duet up teleop --keystore ~/duet_keystore   DDS security: each node in its enclave (docs/security.md)

Mock and sim graphs keep their DDS traffic on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=
LOCALHOST unless set); every graph says its discovery range and ROS domain when it starts.

Same nodes, executables and parameter files as `ros2 launch launch/<graph>.launch.py`.

This module also runs the graph for `duet sim collect --via-ros` and `duet sim deploy`: their
commands live in duet.apps.sim, which imports no duet_ros; register() hands them the runners.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "up",
        help="start a node graph (teleop, bringup, ...) as processes",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("graph", help="graph name in launch/graph.yaml (bringup, teleop, ...)")
    p.add_argument("--mock", action="store_true", help="use_mock_hardware: the mock backend for every device")
    p.add_argument(
        "--config", default="aloha", help="rig: a shipped rig name or a rig YAML path (default aloha)"
    )
    p.add_argument(
        "--sim",
        action="store_true",
        help="the MuJoCo sim rig: same as --mock --config aloha_sim (one process hosts every sim device)",
    )
    p.add_argument("--only", default="", help="comma-separated node names to start (default: all)")
    p.add_argument("--skip", default="", help="comma-separated node names not to start")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE:KEY=VALUE",
        help="parameter override for one node (NODE '*' = every node); repeatable",
    )
    p.add_argument("--log-dir", type=Path, default=None, help="write each node's output to DIR/<node>.log")
    p.add_argument(
        "--graph-file", type=Path, default=None, help="graph description (default launch/graph.yaml)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the node command lines and parameters, start nothing"
    )
    p.add_argument(
        "--keystore",
        type=Path,
        default=None,
        help="SROS2 keystore (duet security keystore): DDS security, Enforce, each node in its enclave "
        "(default: $ROS_SECURITY_KEYSTORE when ROS_SECURITY_ENABLE=true)",
    )
    _add_graph_arguments(p)
    p.set_defaults(func=cmd_up)
    _register_security(subparsers)
    _register_sim(subparsers)


def _register_security(subparsers) -> None:
    p = subparsers.add_parser(
        "security",
        help="DDS security (SROS2): keystores for the node graphs",
        description="DDS security (SROS2) for duet graphs; see docs/security.md",
    )
    sub = p.add_subparsers(dest="security_command", metavar="ACTION")
    sub.required = True
    k = sub.add_parser(
        "keystore",
        help="generate (or extend) a keystore: a CA, one enclave per node process, "
        "governance and permissions (only teleop / policy command the followers; "
        "only /duet/operator calls lifecycle services)",
    )
    k.add_argument(
        "--out",
        type=Path,
        required=True,
        help="keystore directory (created; an existing keystore is extended)",
    )
    k.add_argument(
        "--graph",
        action="append",
        default=[],
        help="graph of launch/graph.yaml (repeatable; default: every graph)",
    )
    k.add_argument(
        "--config", default="aloha", help="rig: a shipped rig name or a rig YAML path (default aloha)"
    )
    k.add_argument(
        "--domain", type=int, default=None, help="restrict governance and permissions to this ROS domain id"
    )
    k.add_argument(
        "--days", type=int, default=3650, help="validity of the certificates and permissions, days"
    )
    k.add_argument(
        "--graph-file", type=Path, default=None, help="graph description (default launch/graph.yaml)"
    )
    k.add_argument(
        "--check",
        action="store_true",
        help="then start one secured rclpy node to see that this ROS can use it",
    )
    k.set_defaults(func=cmd_security_keystore)


def cmd_security_keystore(args) -> int:
    from duet_ros import security
    from duet_ros.graph import load_graph

    if args.days < 1:
        from duet.errors import ConfigError

        raise ConfigError(f"--days {args.days}: give a validity of at least one day")
    policy = security.graph_policy(args.graph or None, args.config, load_graph(args.graph_file))
    names = security.create_keystore(args.out, policy, args.domain, args.days)
    print(f"keystore {args.out}: {len(names)} enclaves ({', '.join(names)})")
    print(
        f"  follower commands: published only by {', '.join(security.COMMAND_KINDS)}; lifecycle services: "
        f"called only from {security.enclave_of(security.OPERATOR)}"
    )
    print(
        f"  run: duet up GRAPH --keystore {args.out}; operator tools: ROS_SECURITY_KEYSTORE={args.out} "
        f"ROS_SECURITY_ENABLE=true ROS_SECURITY_STRATEGY=Enforce ROS_SECURITY_ENCLAVE_OVERRIDE="
        f"{security.enclave_of(security.OPERATOR)} ros2 lifecycle ..."
    )
    if args.check:
        security.check_rmw_security(args.out)
        print("  check: a secured node started in this environment")
    return 0


def _register_sim(subparsers) -> None:
    """`duet sim collect --via-ros` and `duet sim deploy` (commands, flags and checks in
    duet.apps.sim, registered before this module) run the node graph: this layer hands them
    their runners, so the applications import no duet_ros."""
    from duet.apps.sim import use_ros_graph

    use_ros_graph(subparsers, collect=cmd_sim_collect, deploy=cmd_sim_deploy)


def cmd_sim_collect(args) -> int:
    """`duet sim collect --via-ros`: scripted demonstrations through the ROS graph in real time
    (duet up record --sim: sim host, teleop, recorder), recorded into --out."""
    import json

    from duet.errors import DuetError

    try:
        from duet_ros.orchestrate import CollectOptions, collect
    except ImportError as e:
        raise DuetError(
            f"--via-ros needs ROS 2 (rclpy) and the duet_ros package ({e}); run make setup"
        ) from None
    rig = args.rig
    if args.task != "transfer_cube" or args.cameras or args.camera_size or args.camera_fps:
        rig = _derived_rig(args)
    log_dir = Path(args.log_dir) if args.log_dir else Path(str(args.out).rstrip("/") + ".logs")
    opts = CollectOptions(
        dataset=args.out,
        episodes=args.episodes,
        seed=args.seed,
        rig=rig,
        keep_failed=args.keep_failed,
        log_dir=log_dir,
        overrides=parse_sets(args.set),
    )
    if args.render_quality != "fast":
        opts.overrides.setdefault("sim", {})["render_quality"] = args.render_quality
    outcomes = collect(opts)
    kept = sum(o.kept for o in outcomes)
    ok = sum(o.success for o in outcomes)
    print(f"{len(outcomes)} episodes through the ROS graph: {ok} succeeded, {kept} stored in {args.out}")
    if args.report:
        out = Path(args.report)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps({"rig": rig, "via_ros": True, "episodes": [o.__dict__ for o in outcomes]}, indent=1)
        )
        print(f"report: {out}")
    return 0 if kept == len(outcomes) else 1


def _derived_rig(args) -> str:
    """A rig YAML beside the store: the sim rig with --task and only --cameras."""
    import yaml

    from duet.config import to_dict
    from duet.errors import DuetError
    from duet.hardware.rig import load_rig

    rig = load_rig(args.rig, [f"sim_task={args.task}"])
    cams = [c for c in args.cameras.split(",") if c]
    if cams:
        for c in cams:
            rig.camera(c)  # a one-line error for an unknown camera
        rig.cameras = [c for c in rig.cameras if c.name in cams]
    if args.camera_size:
        try:
            h, w = (int(x) for x in args.camera_size.lower().split("x"))
        except ValueError:
            raise DuetError(f"--camera-size {args.camera_size!r}: expected HxW, e.g. 120x160") from None
        for c in rig.cameras:
            c.height, c.width = h, w
    if args.camera_fps:
        for c in rig.cameras:
            c.fps = args.camera_fps
    path = Path(str(args.out).rstrip("/") + ".rig.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(rig), sort_keys=False))
    return str(path)


def cmd_sim_deploy(args) -> int:
    """`duet sim deploy`: a policy drives the sim rig through the ROS graph in real time."""
    from duet.errors import DuetError

    try:
        from duet_ros.orchestrate import deploy
    except ImportError as e:
        raise DuetError(
            f"sim deploy needs ROS 2 (rclpy) and the duet_ros package ({e}); run make setup"
        ) from None
    log_dir = Path(args.log_dir) if args.log_dir else Path(args.checkpoint).resolve().parent / "deploy-logs"
    out = deploy(
        args.rig,
        args.checkpoint,
        seconds=args.seconds,
        seed=args.seed,
        log_dir=log_dir,
        overrides=parse_sets(args.set),
    )
    print(out.summary())
    for e in out.events:
        print(f"  policy event: {e}")
    if not all(out.commands.values()):
        print(f"no commands reached {', '.join(k for k, v in out.commands.items() if not v)}; see {log_dir}")
        return 1
    return 0


def _add_graph_arguments(p) -> None:
    """--NAME VALUE options for the graphs' arguments (launch/graph.yaml `arguments:`),
    e.g. `duet up record --dataset PATH`; the same names are launch arguments (NAME:=VALUE)."""
    import argparse

    from duet.errors import DuetError

    try:
        from duet_ros.graph import load_graph

        arguments = load_graph().all_arguments()
    except DuetError:
        return  # a broken graph file is reported when `duet up` loads it
    for name, a in arguments.items():
        try:
            p.add_argument(
                f"--{name.replace('_', '-')}",
                dest=f"graph_arg_{name}",
                default=None,
                metavar="VALUE",
                help=f"{a.help} (graph argument: sets {a.node}:{a.param})",
            )
        except argparse.ArgumentError:
            continue  # clashes with an option of duet up: use --set NODE:PARAM=VALUE


def parse_sets(items: list[str]) -> dict[str, dict]:
    import json

    from duet.config import parse_override
    from duet.errors import ConfigError

    out: dict[str, dict] = {}
    for item in items:
        node, sep, rest = item.partition(":")
        if not sep or not node or "=" not in rest:
            raise ConfigError(
                f"--set {item!r}: expected NODE:KEY=VALUE, e.g. left_follower:fault_scenario=lossy_1pct"
            )
        path, value = parse_override(rest)
        if isinstance(value, dict) or (
            isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)
        ):
            value = json.dumps(value)  # ROS parameters hold no nested structures (duet.config.flatten)
        out.setdefault(node, {})[".".join(path)] = value
    return out


def select(specs, only: str, skip: str):
    from duet.errors import ConfigError

    names = [s.name for s in specs]
    want = [n for n in only.split(",") if n] or names
    drop = {n for n in skip.split(",") if n}
    for n in [*want, *drop]:
        if n not in names:
            raise ConfigError(f"node {n!r} is not in the graph (nodes: {', '.join(names)})")
    return [s for s in specs if s.name in want and s.name not in drop]


def cmd_up(args) -> int:
    from duet.errors import ConfigError
    from duet_ros.graph import expand, load_graph
    from duet_ros.launcher import GraphRunner, node_params_yaml

    if getattr(args, "sim", False):
        args.mock = True
        if args.config == "aloha":
            args.config = "aloha_sim"
    desc = load_graph(args.graph_file)
    everything = expand(args.graph, args.config, args.mock, desc)
    overrides = parse_sets(args.set)
    names = [n for s in everything for n in s.node_names()]
    unknown = sorted(set(overrides) - set(names) - {"*"})
    if unknown:
        raise ConfigError(
            f"--set for node {unknown[0]!r}: not in graph {args.graph!r} (nodes: {', '.join(names)})"
        )
    specs = select(everything, args.only, args.skip)
    given = {name: getattr(args, f"graph_arg_{name}", None) for name in desc.all_arguments()}
    for node, params in desc.argument_parameters(args.graph, given, [s.name for s in specs]).items():
        overrides[node] = {**params, **overrides.get(node, {})}  # an explicit --set wins
    keystore = args.keystore
    if (
        keystore is None
        and os.environ.get("ROS_SECURITY_ENABLE", "").lower() == "true"
        and os.environ.get("ROS_SECURITY_KEYSTORE")
    ):
        keystore = Path(os.environ["ROS_SECURITY_KEYSTORE"])
    if keystore is not None:
        from duet_ros import security

        security.check_enclaves(keystore, [s.name for s in specs])
        if not args.dry_run:  # fail in one line here rather than in every node
            security.check_rmw_security(keystore, specs[0].name if specs else security.OPERATOR)
    runner = GraphRunner(specs, overrides, log_dir=args.log_dir, keystore=keystore)
    # which hosts can reach the nodes: said first, above all for real hardware
    print(f"[duet up] network: {runner.network()}", file=sys.stderr, flush=True)
    if args.dry_run:
        for c in runner.children:
            print(" ".join(c.argv))
            print(
                "  "
                + node_params_yaml(
                    c.spec,
                    {**overrides.get("*", {}), **overrides.get(c.spec.name, {})},
                    {h.name: {**overrides.get("*", {}), **overrides.get(h.name, {})} for h in c.spec.hosted},
                )
                .replace("\n", "\n  ")
                .rstrip()
            )
        runner.stop()
        return 0
    runner.start()
    print(
        f"[duet up] {args.graph}{' (mock hardware)' if args.mock else ''}: "
        + ", ".join(f"{c.spec.name}[{c.proc.pid}]" for c in runner.children),
        file=sys.stderr,
        flush=True,
    )
    return runner.wait()
