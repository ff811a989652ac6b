"""`duet demo --quick`: the whole loop (collect through the ROS graph, train, eval, deploy
through the ROS graph) on the sim rig, and a failing step ending in one line that names
the step and its log."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from duet.errors import DuetError


def test_a_failing_step_names_the_step_and_its_log(tmp_path, capsys):
    from duet.apps.demo import Runner

    run = Runner(tmp_path, total=1)
    with pytest.raises(DuetError) as e:
        run.step(
            1, "deploy", "a step that fails", ["sim", "deploy", "--checkpoint", str(tmp_path / "missing")]
        )
    msg = str(e.value)
    assert "\n" not in msg and "step 1 (deploy) failed with status 2" in msg
    log = tmp_path / "logs" / "1-deploy.log"
    assert str(log) in msg
    text = log.read_text()
    assert text.startswith("$ duet sim deploy --checkpoint") and "not a directory" in text
    assert "$ duet sim deploy" in capsys.readouterr().out  # the command is shown before it runs


def test_demo_refuses_a_used_output_directory(tmp_path):
    (tmp_path / "x").write_text("")
    out = subprocess.run(
        [sys.executable, "-m", "duet.cli", "demo", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "not empty" in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_demo_runs_every_step_and_leaves_its_outputs(tmp_path, ros_domain):
    from duet.data.store import EpisodeStore

    out_dir = tmp_path / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "duet.cli", "demo", "--quick", "--out", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=290,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    for n, step in enumerate(("collect", "train", "eval", "deploy"), 1):
        assert f"[demo {n}/4] {step} done" in out.stdout
        assert (out_dir / "logs" / f"{n}-{step}.log").is_file()
    summary = json.loads((out_dir / "demo.json").read_text())
    assert EpisodeStore.open(summary["dataset"]).n_episodes >= 1
    assert (out_dir / "eval" / "report.json").is_file()
    assert summary["videos"] and all(p.endswith(".mp4") for p in summary["videos"])
    # commands flowed from the policy node to both sim followers through the ROS graph
    line = next(x for x in out.stdout.splitlines() if x.startswith("policy commanded"))
    counts = [int(w) for w in line.replace(",", " ").split() if w.isdigit()]
    assert len(counts) >= 2 and all(c > 0 for c in counts[:2]), line
