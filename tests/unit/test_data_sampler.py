"""EpisodeSampler windows, edge padding, masks, DataLoader workers; compute_stats."""

import numpy as np
import pytest

from duet.data.layout import ArmSpec, CameraSpec, DatasetSpec
from duet.data.sampler import EpisodeSampler, compute_stats
from duet.data.store import EpisodeStore, StoreError
from duet.errors import DuetError

LENS = (6, 3, 9)


def value(e, k):
    return 100 * e + k  # identifies (episode, step) in every array


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("sampler") / "s.zarr"
    spec = DatasetSpec(
        arms=[
            ArmSpec("left_follower", joints=["a", "g"]),
            ArmSpec("right_follower", joints=["b", "g"]),
            ArmSpec("left_leader", "leader", ["a", "g"]),
        ],
        cameras=[CameraSpec("cam_high", 16, 8), CameraSpec("cam_low", 16, 8)],
        image_codec="lossless",
    )
    s = EpisodeStore.create(path, spec)
    for e, n in enumerate(LENS):
        with s.episode({"task": "t"}) as ep:
            for k in range(n):
                v = value(e, k)
                ep.append(
                    {
                        "left_follower.position": [v, -v],
                        "right_follower.position": [v + 0.5, 1],
                        "left_leader.position": [0, 0],
                        "action": [v, v, v, v + 1],
                        "cam_high.color": np.full((8, 16, 3), v % 256, np.uint8),
                        "cam_low.color": np.full((8, 16, 3), (v + 1) % 256, np.uint8),
                    }
                )
    return s


def test_keys_shapes_and_dtypes(store):
    s = EpisodeSampler(store, n_obs_steps=2, horizon=4)
    assert len(s) == sum(LENS)
    x = s[7]
    assert set(x) == {
        "observation.state",
        "action",
        "action_is_pad",
        "observation.is_pad",
        "observation.images.cam_high",
        "observation.images.cam_low",
    }
    assert x["observation.state"].shape == (2, 4) and x["observation.state"].dtype == np.float32
    assert x["action"].shape == (4, 4) and x["action"].dtype == np.float32
    assert (
        x["observation.images.cam_high"].shape == (2, 8, 16, 3)
        and x["observation.images.cam_high"].dtype == np.uint8
    )
    assert x["action_is_pad"].dtype == bool and x["observation.is_pad"].shape == (2,)


def test_window_alignment_and_edge_padding(store):
    s = EpisodeSampler(store, n_obs_steps=2, horizon=4)
    # first step of episode 0: observation t-1 padded with step 0
    x = s[0]
    assert x["observation.state"][:, 0].tolist() == [0, 0]
    assert x["observation.is_pad"].tolist() == [True, False]
    assert x["action"][:, 0].tolist() == [0, 0, 1, 2]  # actions start at t - n_obs + 1
    assert x["action_is_pad"].tolist() == [True, False, False, False]
    assert x["observation.images.cam_high"][:, 0, 0, 0].tolist() == [0, 0]
    # last step of episode 1 (length 3): actions past the end repeat the last one
    i = LENS[0] + 2
    assert s.locate(i) == (1, 2)
    x = s[i]
    assert x["observation.state"][:, 0].tolist() == [101, 102]
    assert x["action"][:, 0].tolist() == [101, 102, 102, 102]
    assert x["action_is_pad"].tolist() == [False, False, True, True]
    assert x["observation.images.cam_low"][:, 0, 0, 0].tolist() == [102, 103]
    # state concatenates followers in rig pair order
    assert x["observation.state"][1].tolist() == [102, -102, 102.5, 1]
    # ACT-style: one observation, actions t..t+horizon-1
    a = EpisodeSampler(store, n_obs_steps=1, horizon=5, camera_names=["cam_low"])
    y = a[LENS[0] + LENS[1] + 6]
    assert y["action"][:, 0].tolist() == [206, 207, 208, 208, 208]
    assert y["action_is_pad"].tolist() == [False, False, False, True, True]
    assert "observation.images.cam_high" not in y


def test_episode_subset_and_transform(store):
    s = EpisodeSampler(store, 1, 2, episodes=[2], image_transform=lambda im: im[:, ::2, ::2])
    assert len(s) == LENS[2]
    assert s.locate(0) == (2, 0)
    assert s[0]["observation.images.cam_high"].shape == (1, 4, 8, 3)
    with pytest.raises(StoreError, match="episode 7"):
        EpisodeSampler(store, 1, 2, episodes=[7])
    with pytest.raises(DuetError, match="no camera named 'nope'"):
        EpisodeSampler(store, 1, 2, camera_names=["nope"])
    with pytest.raises(IndexError):
        s[LENS[2]]


@pytest.mark.timeout(120)
def test_dataloader_with_worker_processes(store):
    torch = pytest.importorskip("torch")
    s = EpisodeSampler(store.location, n_obs_steps=2, horizon=3)
    dl = torch.utils.data.DataLoader(s, batch_size=5, num_workers=2, shuffle=False)
    batches = list(dl)
    assert sum(b["action"].shape[0] for b in batches) == len(s)
    b = batches[1]
    assert b["observation.images.cam_high"].shape == (5, 2, 8, 16, 3)
    assert b["observation.images.cam_high"].dtype == torch.uint8
    ref = s[5]
    np.testing.assert_array_equal(b["action"][0].numpy(), ref["action"])


def test_compute_stats(store):
    st = compute_stats(store, ["observation.state", "action", "observation.images.cam_high"])
    vals = np.concatenate([[value(e, k) for k in range(n)] for e, n in enumerate(LENS)]).astype(np.float64)
    assert st["action"]["mean"][0] == pytest.approx(vals.mean(), rel=1e-5)
    assert st["action"]["std"][0] == pytest.approx(vals.std(), rel=1e-5)
    assert st["action"]["max"][3] == pytest.approx(vals.max() + 1)
    assert st["observation.state"]["min"].tolist() == pytest.approx([0, -208, 0.5, 1])
    assert st["observation.images.cam_high"]["mean"].shape == (3, 1, 1)
    assert (
        0
        <= st["observation.images.cam_high"]["min"].min()
        <= st["observation.images.cam_high"]["max"].max()
        <= 1
    )
    with pytest.raises(StoreError, match="unknown key"):
        compute_stats(store, ["nope"])
