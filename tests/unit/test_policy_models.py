"""ACT and Diffusion Policy: config validation, shapes, time stamps, normalization, schedule,
temporal ensembling."""

import numpy as np
import pytest
import torch

from duet.config import from_dict
from duet.errors import ConfigError, DuetError
from duet.policy.act import ACTConfig, sine_position_2d
from duet.policy.diffusion import DiffusionConfig, NoiseSchedule
from duet.policy.factory import make_config, make_policy
from duet.policy.interface import ActionChunk, Policy
from duet.policy.normalize import Normalizer, compute_stats
from duet.policy.synthetic import SyntheticEpisodes

S = 6
CAMS = ["cam_high", "cam_left_wrist"]


def _policy(name, **over):
    base = {"camera_names": CAMS, "state_dim": S, "action_dim": S}
    cfg = make_config(name, "micro", [f"{k}={v}" for k, v in over.items()], base=base)
    ds = SyntheticEpisodes(
        n_episodes=2,
        episode_len=20,
        n_obs_steps=cfg.n_obs_steps,
        horizon=cfg.chunk_size if name == "act" else cfg.horizon,
        state_dim=S,
        camera_names=CAMS,
        image_hw=(32, 40) if name == "act" else (64, 64),
    )
    torch.manual_seed(0)
    return make_policy(name, cfg, compute_stats(ds)), ds


def _batch(ds, idx):
    items = [ds[i] for i in idx]
    return {k: torch.as_tensor(np.stack([it[k] for it in items])) for k in items[0]}


# ---------------------------------------------------------------------------- configs


def test_paper_defaults():
    a = ACTConfig()
    assert (a.chunk_size, a.hidden_dim, a.dim_feedforward, a.n_encoder_layers, a.latent_dim, a.kl_weight) == (
        100,
        512,
        3200,
        4,
        32,
        10.0,
    )
    d = DiffusionConfig()
    assert (
        d.n_obs_steps,
        d.horizon,
        d.n_action_steps,
        d.num_train_timesteps,
        d.beta_schedule,
        d.prediction_type,
    ) == (2, 16, 8, 100, "squaredcos_cap_v2", "epsilon")
    assert d.backbone_norm == "group_norm" and a.backbone_norm == "frozen_bn"


@pytest.mark.parametrize(
    "cls,data,match",
    [
        (ACTConfig, {"chunk_size": 0}, "chunk_size"),
        (ACTConfig, {"chunk_size": 10, "n_action_steps": 20}, "n_action_steps"),
        (ACTConfig, {"hidden_dim": 100, "n_heads": 8}, "divisible"),
        (ACTConfig, {"crop_ratio": 1.5}, "crop_ratio"),
        (ACTConfig, {"camera_names": ["a", "a"]}, "duplicates"),
        (ACTConfig, {"nonsense": 1}, "unknown key"),
        (DiffusionConfig, {"horizon": 10}, "divisible by 4"),
        (DiffusionConfig, {"horizon": 16, "n_action_steps": 16}, "n_action_steps"),
        (DiffusionConfig, {"num_inference_steps": 200}, "num_inference_steps"),
        (DiffusionConfig, {"down_dims": [30, 64]}, "n_groups"),
        (DiffusionConfig, {"beta_schedule": "cubic"}, "not one of"),
    ],
)
def test_config_validation(cls, data, match):
    with pytest.raises(ConfigError, match=match) as e:
        from_dict(cls, data)
    assert "\n" not in str(e.value)


def test_policy_needs_data_shapes():
    with pytest.raises(ConfigError, match="camera_names"):
        make_policy(
            "act",
            ACTConfig(),
            {"observation.state": {"mean": [0], "std": [1]}, "action": {"mean": [0], "std": [1]}},
        )


def test_float_overrides_without_a_dot():
    assert make_config("act", overrides=["lr=3e-4"]).lr == pytest.approx(3e-4)


# ---------------------------------------------------------------------------- shapes and times


@pytest.mark.parametrize("name", ["act", "diffusion"])
def test_forward_and_predict_shapes(name):
    policy, ds = _policy(name)
    assert isinstance(policy, Policy)
    batch = _batch(ds, [0, 5, 19])
    out = policy(batch)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in policy.model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)

    item = ds[7]
    chunk = policy.predict_chunk({k: v for k, v in item.items() if k.startswith("observation.")})
    assert isinstance(chunk, ActionChunk)
    assert chunk.actions.shape == (policy.horizon, S) and chunk.actions.dtype == np.float32
    np.testing.assert_allclose(chunk.t_rel, np.arange(policy.horizon) * policy.control_dt)
    assert policy.n_action_steps <= policy.horizon


def test_act_horizon_and_single_step_observation():
    policy, ds = _policy("act")
    assert policy.n_obs_steps == 1 and policy.horizon == policy.config.chunk_size == 10
    item = ds[3]
    obs = {
        "observation.state": item["observation.state"][0],
        **{f"observation.images.{c}": item[f"observation.images.{c}"][0] for c in CAMS},
    }
    a = policy.predict_chunk(obs).actions
    b = policy.predict_chunk({k: v[None] for k, v in obs.items()}).actions
    np.testing.assert_allclose(a, b, atol=1e-6)  # latent z = 0: deterministic


def test_diffusion_chunk_starts_at_last_observation():
    policy, ds = _policy("diffusion")
    cfg = policy.config
    assert policy.n_obs_steps == 2 and policy.horizon == cfg.horizon - 1 and policy.chunk_start == 1
    assert policy.sampler_horizon == cfg.horizon
    # one step at a time: the queue repeats the first observation at an episode start
    item = ds[4]
    step = {
        "observation.state": item["observation.state"][-1],
        **{f"observation.images.{c}": item[f"observation.images.{c}"][-1] for c in CAMS},
    }
    policy.reset()
    torch.manual_seed(1)
    a = policy.predict_chunk(step).actions
    doubled = {k: np.stack([v, v]) for k, v in step.items()}
    torch.manual_seed(1)
    b = policy.predict_chunk(doubled).actions
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_missing_camera_is_a_clear_error():
    policy, ds = _policy("act")
    obs = {k: v for k, v in ds[0].items() if k != "observation.images.cam_left_wrist"}
    with pytest.raises(DuetError, match="cam_left_wrist"):
        policy.predict_chunk(obs)


def test_act_loss_masks_padding():
    policy, ds = _policy("act")
    policy.eval()
    last = len(ds) // 2 - 1  # last step of episode 0: all but one action padded
    batch = _batch(ds, [last])
    assert batch["action_is_pad"].sum() == policy.config.chunk_size - 1
    torch.manual_seed(0)
    base = policy(batch)["l1"]
    batch["action"][0, 1:] += 100.0  # garbage where padded
    torch.manual_seed(0)
    assert torch.allclose(policy(batch)["l1"], base)


# ---------------------------------------------------------------------------- pieces


def test_normalizer_round_trip_and_min_std():
    stats = {
        "observation.state": {"mean": [1.0, 2.0], "std": [0.5, 0.0]},
        "action": {"mean": [0.0, -1.0], "std": [2.0, 1.0]},
    }
    n = Normalizer(stats)
    assert n.state_std[1] == pytest.approx(1e-2)
    a = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(n.unaction(n.action(a)), a)
    img = torch.full((1, 4, 4, 3), 255, dtype=torch.uint8)
    out = n.image(img)
    assert out.shape == (1, 3, 4, 4)
    torch.testing.assert_close(
        out[0, :, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    )


def test_noise_schedule_and_ddim_timesteps():
    sched = NoiseSchedule(DiffusionConfig())
    ab = sched.alphas_cumprod
    assert ab.shape == (100,) and torch.all(ab[1:] < ab[:-1]) and 0.99 < ab[0] < 1 and ab[-1] < 1e-3
    assert sched.inference_timesteps(3) == [99, 66, 32]
    assert sched.inference_timesteps(100) == list(range(99, -1, -1))
    # a perfect epsilon from the true noise reconstructs x0 in one DDIM step to t_prev = -1
    x0 = torch.randn(2, 8, 3).clamp(-3, 3)
    eps = torch.randn_like(x0)
    xt = sched.add_noise(x0, eps, torch.tensor([50, 50]))
    torch.testing.assert_close(sched.ddim_step(eps, 50, -1, xt), x0, atol=1e-4, rtol=1e-4)


def test_sine_position_embedding_distinguishes_positions():
    pos = sine_position_2d(3, 4, 16, torch.device("cpu"))
    assert pos.shape == (12, 16)
    assert torch.cdist(pos, pos).fill_diagonal_(1.0).min() > 1e-3


def test_image_pipeline_crop_and_resize():
    policy, _ = _policy("act", image_size="[24, 32]", crop_ratio=0.75, random_shift=2)
    imgs = torch.randint(0, 255, (5, 48, 64, 3), dtype=torch.uint8)
    policy.train()
    out_train = policy.images(imgs, policy.normalizer)
    policy.eval()
    out_eval = policy.images(imgs, policy.normalizer)
    assert out_train.shape == out_eval.shape == (5, 3, 18, 24)
    torch.testing.assert_close(policy.images(imgs, policy.normalizer), out_eval)  # eval: deterministic


def test_diffusion_rejects_images_too_small_for_keypoints():
    policy, ds = _policy("diffusion")
    batch = _batch(ds, [0, 1])
    for c in CAMS:
        batch[f"observation.images.{c}"] = batch[f"observation.images.{c}"][:, :, :32, :32]
    with pytest.raises(DuetError, match="1x1 feature map"):
        policy(batch)
