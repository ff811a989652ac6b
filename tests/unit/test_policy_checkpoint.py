"""Checkpoints: save -> load gives identical predictions; damaged or missing files fail in one line."""

import json

import numpy as np
import pytest
import torch

from duet.errors import DuetError
from duet.policy.checkpoint import (
    CheckpointError,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_meta,
    save_checkpoint,
)
from duet.policy.factory import load_policy, make_config, make_policy
from duet.policy.normalize import compute_stats
from duet.policy.synthetic import SyntheticEpisodes

S = 5


def _trained_policy(name):
    base = {"camera_names": ["cam_high"], "state_dim": S, "action_dim": S}
    cfg = make_config(name, "micro", base=base)
    ds = SyntheticEpisodes(
        n_episodes=2,
        episode_len=16,
        n_obs_steps=cfg.n_obs_steps,
        horizon=cfg.chunk_size if name == "act" else cfg.horizon,
        state_dim=S,
        image_hw=(32, 32) if name == "act" else (64, 64),
    )
    torch.manual_seed(0)
    policy = make_policy(name, cfg, compute_stats(ds))
    # a couple of optimizer steps so weights (and EMA) differ from their initialization
    opt = torch.optim.AdamW(policy.optimizer_param_groups(), lr=1e-2)
    batch = {k: torch.as_tensor(np.stack([ds[i][k] for i in range(8)])) for k in ds[0]}
    for step in range(2):
        loss = policy(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        policy.after_optimizer_step(step)
    obs = {k: v for k, v in ds[9].items() if k.startswith("observation.")}
    return policy, obs


@pytest.mark.parametrize("name", ["act", "diffusion"])
def test_save_load_identical_predictions(tmp_path, name):
    policy, obs = _trained_policy(name)
    save_checkpoint(tmp_path / "ck", policy, step=2)
    loaded = load_policy(tmp_path / "ck", device="cpu")
    assert loaded.name == name and loaded.config == policy.config
    for a, b in zip(policy.model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(3)
    want = policy.predict_chunk(obs)
    torch.manual_seed(3)
    got = loaded.predict_chunk(obs)
    np.testing.assert_array_equal(got.actions, want.actions)
    np.testing.assert_array_equal(got.t_rel, want.t_rel)
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    expected = ["config.json", "model.safetensors", "stats.safetensors"]
    assert names == sorted(expected + (["ema.safetensors"] if name == "diffusion" else []))
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.old"))


def test_diffusion_inference_uses_ema(tmp_path):
    policy, obs = _trained_policy("diffusion")
    save_checkpoint(tmp_path / "ck", policy)
    loaded = load_policy(tmp_path / "ck", device="cpu")
    for a, b in zip(policy.ema.state_dict().values(), loaded.ema.state_dict().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(loaded.ema.parameters(), loaded.model.parameters()))


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    policy, _ = _trained_policy("act")
    d = tmp_path_factory.mktemp("ck") / "act"
    save_checkpoint(d, policy)
    return d


def _copy(saved, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(saved, dst)
    return dst


@pytest.mark.parametrize("victim", ["model.safetensors", "stats.safetensors", "config.json"])
def test_missing_file(saved, tmp_path, victim):
    d = _copy(saved, tmp_path)
    (d / victim).unlink()
    with pytest.raises(CheckpointError) as e:
        load_policy(d, device="cpu")
    msg = _one_line(e)
    assert victim in msg and "copy the whole checkpoint" in msg


def test_tampered_weights_fail_checksum(saved, tmp_path):
    d = _copy(saved, tmp_path)
    raw = bytearray((d / "model.safetensors").read_bytes())
    raw[-10] ^= 0xFF  # flip bits in the tensor data: still a valid safetensors file
    (d / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(DuetError) as e:
        load_policy(d, device="cpu")
    assert "model.safetensors does not match its checksum" in _one_line(e)


def test_truncated_file_without_checksums_is_still_caught(saved, tmp_path):
    d = _copy(saved, tmp_path)
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100])
    from duet.policy.factory import policy_from_checkpoint

    with pytest.raises(CheckpointError) as e:
        policy_from_checkpoint(d, verify=False)
    assert "model.safetensors is not a valid safetensors file" in _one_line(e)


def test_shape_mismatch_names_tensor(saved, tmp_path):
    d = _copy(saved, tmp_path)
    meta = json.loads((d / "config.json").read_text())
    meta["config"]["hidden_dim"] = 64  # config and weights disagree
    (d / "config.json").write_text(json.dumps(meta))
    from duet.policy.factory import policy_from_checkpoint

    with pytest.raises(CheckpointError) as e:
        policy_from_checkpoint(d)
    msg = _one_line(e)
    assert "model.safetensors" in msg and "shape" in msg


def test_old_act_config_with_retired_temporal_ensemble_k_still_loads(saved, tmp_path):
    d = _copy(saved, tmp_path)
    meta = json.loads((d / "config.json").read_text())
    meta["config"]["temporal_ensemble_k"] = 0.01  # written by duet before it was retired
    (d / "config.json").write_text(json.dumps(meta))
    loaded = load_policy(d, device="cpu")
    assert not hasattr(loaded.config, "temporal_ensemble_k")
    meta["config"]["temporal_ensemble_kk"] = 0.01  # any other unknown key is still an error
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown key 'temporal_ensemble_kk'"):
        load_policy(d, device="cpu")


def test_bad_config_json(saved, tmp_path):
    d = _copy(saved, tmp_path)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError) as e:
        read_meta(d)
    assert "config.json is not valid JSON" in _one_line(e)
    (d / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a duet policy checkpoint"):
        read_meta(d)
    with pytest.raises(CheckpointError, match="not a directory"):
        read_meta(tmp_path / "absent")


def test_optimizer_state_round_trip():
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.95, 0.999))
    p.grad = torch.ones_like(p)
    opt.step()
    tensors, rest = optimizer_to_tensors(opt.state_dict())
    rest = json.loads(json.dumps(rest))  # must be JSON-able
    opt2 = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone())], lr=1e-3)
    opt2.load_state_dict(optimizer_from_tensors(tensors, rest))
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(v, opt2.state_dict()["state"][0][k])
    assert list(opt2.param_groups[0]["betas"]) == [0.95, 0.999]
