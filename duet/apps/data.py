"""`duet data ...`: inspect, edit, convert and share episode stores."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data", help="episode stores: ls, info, plot, video, replay, edit, convert, push"
    )
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    def add(name: str, fn, help: str) -> argparse.ArgumentParser:  # noqa: A002
        q = sub.add_parser(name, help=help, description=help)
        q.set_defaults(func=fn)
        return q

    q = add("ls", _ls, "list episodes (index, length, task, flags)")
    q.add_argument("store")
    q = add("info", _info, "store layout, episodes, health per episode, disk size")
    q.add_argument("store")
    q.add_argument("-v", "--verbose", action="store_true", help="one health line per episode")
    q.add_argument("--json", action="store_true", help="print the per-episode metadata as JSON")
    q.add_argument(
        "--check",
        action="store_true",
        help="verify that every chunk of committed data exists and decodes (exit 1 if not)",
    )
    q = add("plot", _plot, "PNG of an episode's joint positions and commands")
    q.add_argument("store")
    q.add_argument("episode", type=int)
    q.add_argument("-o", "--out", default=None, help="output PNG (default episode_<i>.png)")
    q = add("video", _video, "MP4 of an episode's cameras side by side")
    q.add_argument("store")
    q.add_argument("episode", type=int)
    q.add_argument("-o", "--out", default=None, help="output MP4 (default episode_<i>.mp4)")
    q.add_argument("--cameras", nargs="*", default=None)
    q.add_argument("--height", type=int, default=240, help="height of each camera tile, px")
    q = add("replay", _replay, "play an episode's actions on the followers (mock by default)")
    q.add_argument("store")
    q.add_argument("episode", type=int)
    q.add_argument("--rig", default="aloha", help="rig name or YAML path")
    q.add_argument("--real", action="store_true", help="use the real arms (default: mock hardware)")
    q.add_argument("--speed", type=float, default=1.0, help="playback speed factor")
    q = add("drop", _drop, "remove episodes (rewrites the store)")
    q.add_argument("store")
    q.add_argument("episodes", help="indices: N, A-B or a comma list")
    q = add("merge", _merge, "append the episodes of SRC stores to DST")
    q.add_argument("dst")
    q.add_argument("sources", nargs="+")
    q = add("split", _split, "one store per task under OUT_DIR")
    q.add_argument("store")
    q.add_argument("out_dir")
    q = add(
        "recover",
        _recover,
        "after a crash: commit (default) or discard the partial episode; rebuild "
        "damaged metadata files from their copies",
    )
    q.add_argument("store")
    q.add_argument("--discard", action="store_true", help="discard the partial episode instead")
    q = add("push", _push, "merge a local store into a shared store at any fsspec URL")
    q.add_argument("src")
    q.add_argument("dst_url", help="directory, file://, s3://bucket/path.zarr, memory://...")
    q = add("import-aloha", _import_aloha, "import ALOHA/ACT HDF5 episodes")
    q.add_argument("dst")
    q.add_argument("files", nargs="+")
    q.add_argument("--task", default="", help="task name (default: file stem)")
    q.add_argument("--fps", type=float, default=50.0)
    q.add_argument("--lossless", action="store_true", help="store images lossless (zstd) instead of JPEG")
    q = add("export-aloha", _export_aloha, "write one episode as an ALOHA HDF5 file")
    q.add_argument("store")
    q.add_argument("episode", type=int)
    q.add_argument("out")
    q = add(
        "import-bag",
        _import_bag,
        "import rosbag2 bags (sqlite3 or MCAP): JointState and (Compressed)Image topics, "
        "resampled at the rig rate",
    )
    q.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 directories or .mcap / .db3 files")
    q.add_argument(
        "--out", required=True, help="the store (created if absent; its layout must match the rig)"
    )
    q.add_argument("--rig", default="aloha", help="rig name or YAML path: arms, cameras, rate")
    q.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="DUET_TOPIC=BAG_TOPIC",
        help="read a duet topic (/<arm>/joint_states, /<follower>/command, /<camera>/image/compressed) "
        "from another bag topic; repeatable",
    )
    split = q.add_mutually_exclusive_group()
    split.add_argument(
        "--gap", type=float, default=None, help="start a new episode after GAP s without samples"
    )
    split.add_argument(
        "--marker",
        default=None,
        metavar="TOPIC",
        help="split at a std_msgs/String (text = task, empty = end) or Bool (true = start, false = end) topic",
    )
    q.add_argument("--task", default="", help="task of the episodes (a String marker's text wins)")
    q.add_argument("--operator", default="")
    q = add("export-bag", _export_bag, "write one episode as a rosbag2 bag with duet's topics")
    q.add_argument("store")
    q.add_argument("episode", type=int)
    q.add_argument("--out", required=True, help="BAG.mcap (one MCAP file) or a directory (rosbag2 bag)")
    q.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="for a directory --out")
    q.add_argument("--overwrite", action="store_true")
    q = add("export-lerobot", _export_lerobot, "export to the LeRobotDataset v3.0 layout")
    q.add_argument("store")
    q.add_argument("out_dir")
    q.add_argument("--episodes", default=None, help="indices: N, A-B or a comma list (default all)")
    q.add_argument("--robot-type", default="aloha")
    q.add_argument("--overwrite", action="store_true")


def _open(path: str, mode: str = "r"):
    from duet.data.store import EpisodeStore

    return EpisodeStore.open(path, mode)


def _progress() -> bool:
    return sys.stderr.isatty()


def _ls(args) -> int:
    from duet.data.tools import info_lines

    s = _open(args.store)
    for line in info_lines(s)[3:]:
        print(line)
    if s.n_episodes == 0:
        print(f"{s.location}: no episodes")
    return 0


def _info(args) -> int:
    from duet.data.tools import info_lines

    s = _open(args.store)
    if args.json:
        print(json.dumps(s.episodes_meta(), indent=2, default=str))
        return 0
    print("\n".join(info_lines(s, verbose=args.verbose)))
    if args.check:
        checked, problems = s.check(progress=_progress())
        for line in problems:
            print(f"  DAMAGED {line}")
        if problems:
            print(f"check: {len(problems)} of {checked} chunks missing or unreadable")
            return 1
        print(f"check: all {checked} chunks of committed data present and readable")
    return 0


def _plot(args) -> int:
    from duet.data.tools import plot_episode

    out = plot_episode(_open(args.store), args.episode, args.out or f"episode_{args.episode}.png")
    print(f"wrote {out}")
    return 0


def _video(args) -> int:
    from duet.data.tools import video_episode

    out = video_episode(
        _open(args.store),
        args.episode,
        args.out or f"episode_{args.episode}.mp4",
        cameras=args.cameras,
        height=args.height,
        progress=_progress(),
    )
    print(f"wrote {out}")
    return 0


def _replay(args) -> int:
    from duet.hardware.rig import load_rig
    from duet.teleop.replay import replay_episode

    rig = load_rig(args.rig)
    res = replay_episode(
        _open(args.store), args.episode, rig, use_mock_hardware=not args.real, speed=args.speed
    )
    print(
        f"replayed {res['ticks']} ticks (ramp {res['ramp_ticks']}), clamped commands {res['clamped_commands']}; "
        f"{res['timing']}"
    )
    return 0


def _drop(args) -> int:
    from duet.data.store import iter_episode_indices
    from duet.data.tools import drop_episodes

    with _open(args.store, "a") as s:
        idx = list(iter_episode_indices(args.episodes, s.n_episodes))
        n = drop_episodes(s, idx, progress=_progress())
        print(f"dropped {n} episode(s); {s.n_episodes} left")
    return 0


def _merge(args) -> int:
    from duet.data.tools import merge_stores

    n = merge_stores(args.sources, args.dst, progress=_progress())
    print(f"appended {n} episode(s) to {args.dst}")
    return 0


def _push(args) -> int:
    from duet.data.tools import merge_stores

    n = merge_stores([args.src], args.dst_url, progress=_progress())
    print(f"pushed {n} episode(s) to {args.dst_url}")
    return 0


def _split(args) -> int:
    from duet.data.tools import split_by_task

    for task, p in split_by_task(_open(args.store), args.out_dir, progress=_progress()).items():
        print(f"{task!r}: {p}")
    return 0


def _recover(args) -> int:
    from duet.data.store import EpisodeStore

    # Refused (one line naming the holder) while a live writer holds the store; holds the
    # writer lock itself until done.
    with EpisodeStore.open_for_recovery(args.store) as s:
        return _recover_locked(s, args)


def _recover_locked(s, args) -> int:
    from duet.data.lock import describe_holder

    if s.lock is not None and s.lock.took_over:
        print(
            f"took over the writer lock of {describe_holder(s.lock.took_over)}, which ended without releasing it"
        )
    for line in s.repairs:
        print(line)
    res = s.recover(commit=not args.discard)
    if res["action"] == "committed":
        print(
            f"recovered a partial episode: {res['steps']} steps committed as episode {res['episode']} (flagged)"
        )
    elif res["action"] == "discarded":
        print(f"discarded a partial episode of {res['steps']} steps")
    else:
        print("nothing to recover")
    if res["temp_files_removed"]:
        print(f"removed {res['temp_files_removed']} temporary file(s)")
    print(f"{s.location}: {s.n_episodes} episodes intact")
    return 0


def _import_aloha(args) -> int:
    from duet.data.tools import import_aloha

    idx = import_aloha(
        args.files,
        args.dst,
        task=args.task,
        fps=args.fps,
        image_codec="lossless" if args.lossless else "jpeg",
        progress=_progress(),
    )
    print(f"imported {len(idx)} episode(s) into {args.dst}")
    return 0


def _export_aloha(args) -> int:
    from duet.data.tools import export_aloha

    print(f"wrote {export_aloha(_open(args.store), args.episode, args.out)}")
    return 0


def _export_lerobot(args) -> int:
    from duet.data.store import iter_episode_indices
    from duet.data.tools import export_lerobot

    s = _open(args.store)
    eps = None if args.episodes is None else list(iter_episode_indices(args.episodes, s.n_episodes))
    out = export_lerobot(
        s,
        args.out_dir,
        episodes=eps,
        robot_type=args.robot_type,
        progress=_progress(),
        overwrite=args.overwrite,
    )
    print(f"wrote LeRobot v3.0 dataset to {out}")
    return 0


def _import_bag(args) -> int:
    from duet.data.bag import import_bags, parse_topic_map
    from duet.data.layout import DatasetSpec
    from duet.hardware.rig import load_rig

    rig = load_rig(args.rig)

    def show(ep) -> None:
        print(f"{ep.bag}: episode {ep.index}, {ep.length} steps: {ep.line}")

    eps = import_bags(
        args.bags,
        args.out,
        DatasetSpec.from_rig(rig),
        rig=rig,
        topic_map=parse_topic_map(args.topic),
        gap_s=args.gap,
        marker=args.marker,
        task=args.task,
        operator=args.operator,
        on_episode=show,
    )
    print(f"imported {len(eps)} episode(s) from {len(args.bags)} bag(s) into {args.out}")
    return 0


def _export_bag(args) -> int:
    from duet.data.bag import export_bag

    out = export_bag(
        _open(args.store), args.episode, args.out, storage=args.storage, overwrite=args.overwrite
    )
    print(f"wrote {out}")
    return 0
