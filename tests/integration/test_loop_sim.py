"""The whole loop on the MuJoCo sim, through the real command-line entry points:
`duet sim collect` (scripted demonstrations recorded to a store) -> `duet train` (a micro ACT,
a handful of steps) -> `duet eval` (the policy server driving the sim followers in lockstep).

The model is far too small and too briefly trained to succeed; the test checks that the loop
runs end to end and that the report and video are complete, not the success rate.
"""

from __future__ import annotations

import json

import pytest
import yaml

pytest.importorskip("mujoco")
av = pytest.importorskip("av")

from duet.cli import main  # noqa: E402
from duet.config import to_dict  # noqa: E402
from duet.hardware.rig import load_rig  # noqa: E402
from duet.hardware.sim.tasks import TransferCube  # noqa: E402
from duet.policy.evaluate import EVAL_SEED_BASE  # noqa: E402

H, W = 48, 64


@pytest.fixture
def tiny_rig(tmp_path):
    """aloha_sim with one small camera (what the micro policy is trained on)."""
    rig = to_dict(load_rig("aloha_sim"))
    rig["name"] = "loop_sim_test"
    rig["cameras"] = [{"name": "cam_high", "kind": "realsense", "width": W, "height": H, "fps": 50}]
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(rig))
    return path


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_collect_train_eval_loop(tmp_path, tiny_rig, capsys):
    store = tmp_path / "demos.zarr"
    assert (
        main(
            [
                "sim",
                "collect",
                "--rig",
                str(tiny_rig),
                "--task",
                "transfer_cube",
                "--episodes",
                "2",
                "--seed",
                "0",
                "--out",
                str(store),
            ]
        )
        == 0
    )

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--policy",
                "act",
                "--dataset",
                str(store),
                "--out",
                str(run),
                "--preset",
                "micro",
                "--steps",
                "8",
                "--device",
                "cpu",
                "--no-progress",
                "--set",
                "train.num_workers=0",
                "--set",
                "train.log_every=4",
            ]
        )
        == 0
    )
    ckpt = run / "checkpoints" / "step_0000008"
    assert (ckpt / "config.json").is_file()

    out = tmp_path / "eval"
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(ckpt),
                "--task",
                "transfer_cube",
                "--episodes",
                "2",
                "--videos",
                "1",
                "--out",
                str(out),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "stage 4 transferred" in printed and "95% CI" in printed

    report = json.loads((out / "report.json").read_text())
    ticks = TransferCube.episode_ticks
    assert report["format"] == "duet-eval" and report["task"] == "transfer_cube"
    assert report["episodes"] == 2 and report["ticks_per_episode"] == ticks
    assert report["seeds"] == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1]
    assert report["training_seed_overlap"] == []  # the store's demonstrations used seeds 0 and 1
    assert report["checkpoint"]["step"] == 8 and report["checkpoint"]["policy"] == "act"
    assert report["camera"] == {
        "source": "training dataset",
        "cameras": {"cam_high": {"height": H, "width": W}},
        "render_quality": "fast",
    }
    assert report["mode"] == "async" and report["latency"]["mode"] == "zero"
    # Stage structure: one entry per stage, counts non-increasing, CIs around the rates.
    stages = report["stages"]
    assert [s["name"] for s in stages] == list(TransferCube.stages)
    counts = [s["count"] for s in stages]
    assert counts == sorted(counts, reverse=True)
    for s in stages:
        lo, hi = s["ci95"]
        assert s["episodes"] == 2 and 0 <= lo <= s["rate"] <= hi <= 1 and hi - lo > 0.3
    assert report["success"] == stages[-1]
    eps = report["per_episode"]
    assert [e["max_stage"] >= 1 for e in eps].count(True) == counts[0]
    # The loop ran: every tick of both episodes went through the server, and the policy's
    # chunks (not only holds) were sent to the sim followers.
    srv = report["server"]
    assert [e["ticks"] for e in eps] == [ticks, ticks] and srv["ticks"] == 2 * ticks
    assert srv["queries"] >= 2 and srv["chunks_received"] >= 2
    assert srv["executed_ticks"] > ticks and srv["inference_errors"] == 0 and srv["invalid_chunks"] == 0
    assert report["inference_wall_ms"]["count"] == srv["queries"] and report["inference_wall_ms"]["p50"] > 0
    # One video (the first episode), relative to the report, decodable, one frame per tick.
    assert report["videos"] == ["videos/episode_000_seed_100000.mp4"]
    assert eps[1]["video"] is None
    with av.open(str(out / report["videos"][0])) as c:
        stream = c.streams.video[0]
        frames = [f for f in c.decode(stream)]
    assert stream.codec_context.name == "h264"
    assert len(frames) == ticks
    img = frames[-1].to_ndarray(format="rgb24")
    assert img.shape[0] >= 240 and img.std() > 5  # upscaled camera view, not a blank frame
