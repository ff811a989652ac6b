"""Training sampler: fixed-size windows over episodes, with edge padding and masks.

Sample k corresponds to one time step t of one episode (every step of every selected
episode is a sample). With n_obs observation steps and a horizon of actions::

    observation.*  steps t-n_obs+1 .. t                (before the episode start: step 0 repeated)
    action         steps t-n_obs+1 .. t-n_obs+horizon  (after the episode end: last step repeated)
    observation.is_pad / action_is_pad: True where a value was repeated

so ACT (n_obs=1) gets actions t..t+horizon-1 and Diffusion Policy (n_obs=2) gets the
action window aligned with its first observation (as in diffusion_policy / LeRobot).

The sampler is a map-style dataset (len / getitem -> dict of numpy arrays) that works with
torch.utils.data.DataLoader and worker processes: low-dimensional data is loaded once,
images are read and decoded in __getitem__ (so in the workers); the zarr store is
(re)opened lazily per process, read-only (readers never take the writer lock). Missing or
undecodable data raises DamagedStoreError (one line naming the file, episode and frame,
even when it comes back through a DataLoader worker). No torch import here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from duet.data.keys import ACTION, ACTION_IS_PAD, IMAGE_PREFIX, OBS_IS_PAD, STATE, image_key
from duet.data.store import EpisodeStore, StoreError


class EpisodeSampler:
    def __init__(
        self,
        store_or_path: EpisodeStore | str | os.PathLike,
        n_obs_steps: int,
        horizon: int,
        camera_names: Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
        image_transform: Callable[[np.ndarray], np.ndarray] | None = None,
        storage_options: dict | None = None,
    ):
        """image_transform, if given, gets each camera's (n_obs, H, W, 3) uint8 window and
        returns the array to put in the sample (e.g. resized or augmented)."""
        if n_obs_steps < 1 or horizon < 1:
            raise StoreError(f"sampler: n_obs_steps and horizon must be >= 1 (got {n_obs_steps}, {horizon})")
        if isinstance(store_or_path, EpisodeStore):
            store = store_or_path
            self._location = store.location
        else:
            self._location = os.fspath(store_or_path)
            store = EpisodeStore.open(self._location, "r", storage_options)
        self._storage_options = storage_options
        self._store: EpisodeStore | None = store
        self._pid = os.getpid()
        self.n_obs_steps = int(n_obs_steps)
        self.horizon = int(horizon)
        spec = store.spec
        self.spec = spec
        self.camera_names = list(spec.camera_names if camera_names is None else camera_names)
        for c in self.camera_names:
            spec.camera(c)  # raises with the list of cameras
        n = store.n_episodes
        self.episodes = list(range(n)) if episodes is None else [int(i) for i in episodes]
        for i in self.episodes:
            if not 0 <= i < n:
                raise StoreError(f"sampler: episode {i} not in {store.location} (0..{n - 1})")
        self.image_transform = image_transform
        # Low-dimensional data of the selected episodes, concatenated in memory.
        state_keys = [f"{f}.position" for f in spec.followers]
        starts, lengths, states, actions = [], [], [], []
        off = 0
        for i in self.episodes:
            sl = store.episode_slice(i)
            states.append(
                np.concatenate([np.asarray(store.read(k, sl), np.float32) for k in state_keys], axis=1)
            )
            actions.append(np.asarray(store.read("action", sl), np.float32))
            starts.append(off)
            lengths.append(sl.stop - sl.start)
            off += sl.stop - sl.start
        self._state = np.concatenate(states) if states else np.zeros((0, spec.state_dim), np.float32)
        self._action = np.concatenate(actions) if actions else np.zeros((0, spec.action_dim), np.float32)
        self._ep_start_local = np.asarray(starts, np.int64)
        self._ep_len = np.asarray(lengths, np.int64)
        self._ep_start_store = np.asarray([store.episode_slice(i).start for i in self.episodes], np.int64)
        # sample index -> (episode position, step)
        self._cum = np.concatenate([[0], np.cumsum(self._ep_len)])

    def __len__(self) -> int:
        return int(self._cum[-1])

    @property
    def store(self) -> EpisodeStore:
        if self._store is None or self._pid != os.getpid():
            self._store = EpisodeStore.open(self._location, "r", self._storage_options)
            self._pid = os.getpid()
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_store"] = None  # re-opened in the worker
        return d

    def locate(self, index: int) -> tuple[int, int]:
        """Sample index -> (episode index in the store, step within the episode)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range (0..{len(self) - 1})")
        e = int(np.searchsorted(self._cum, index, side="right") - 1)
        return self.episodes[e], int(index - self._cum[e])

    def _windows(self, e: int, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        L = int(self._ep_len[e])
        obs = np.arange(t - self.n_obs_steps + 1, t + 1)
        act = np.arange(t - self.n_obs_steps + 1, t - self.n_obs_steps + 1 + self.horizon)
        obs_pad = (obs < 0) | (obs >= L)
        act_pad = (act < 0) | (act >= L)
        return np.clip(obs, 0, L - 1), obs_pad, np.clip(act, 0, L - 1), act_pad

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range (0..{len(self) - 1})")
        e = int(np.searchsorted(self._cum, index, side="right") - 1)
        t = int(index - self._cum[e])
        obs, obs_pad, act, act_pad = self._windows(e, t)
        base = int(self._ep_start_local[e])
        out: dict[str, np.ndarray] = {
            STATE: self._state[base + obs],
            ACTION: self._action[base + act],
            ACTION_IS_PAD: act_pad,
            OBS_IS_PAD: obs_pad,
        }
        if self.camera_names:
            store = self.store
            s0 = int(self._ep_start_store[e])
            uniq, inv = np.unique(obs, return_inverse=True)
            for cam in self.camera_names:
                imgs = store.read_frames(cam, s0 + uniq)[inv]
                if self.image_transform is not None:
                    imgs = self.image_transform(imgs)
                out[image_key(cam)] = imgs
        return out


def compute_stats(
    store: EpisodeStore | str,
    keys: Sequence[str] = (STATE, ACTION),
    episodes: Sequence[int] | None = None,
    max_image_frames: int = 200,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """mean / std / min / max per key over the selected episodes (for the normalizer).

    Keys: "observation.state", "action", any data key (e.g. "left_follower.velocity"), or
    "observation.images.<cam>" (per channel over up to max_image_frames random frames,
    in 0..1 units, shape (3, 1, 1))."""
    if not isinstance(store, EpisodeStore):
        store = EpisodeStore.open(store, "r")
    spec = store.spec
    eps = list(range(store.n_episodes)) if episodes is None else list(episodes)
    if not eps:
        raise StoreError(f"{store.location}: no episodes to compute statistics over")
    slices = [store.episode_slice(i) for i in eps]
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:
        if key.startswith(IMAGE_PREFIX):
            cam = key[len(IMAGE_PREFIX) :]
            spec.camera(cam)
            steps = np.concatenate([np.arange(s.start, s.stop) for s in slices])
            rng = np.random.default_rng(seed)
            pick = np.sort(rng.choice(steps, size=min(max_image_frames, len(steps)), replace=False))
            imgs = store.read_frames(cam, pick).astype(np.float64) / 255.0
            flat = imgs.reshape(-1, 3)
            out[key] = {
                "mean": flat.mean(0).reshape(3, 1, 1).astype(np.float32),
                "std": flat.std(0).reshape(3, 1, 1).astype(np.float32),
                "min": flat.min(0).reshape(3, 1, 1).astype(np.float32),
                "max": flat.max(0).reshape(3, 1, 1).astype(np.float32),
            }
            continue
        if key == STATE:
            parts = [f"{f}.position" for f in spec.followers]
        elif key in spec.lowdim_arrays():
            parts = [key]
        else:
            raise StoreError(
                f"compute_stats: unknown key {key!r} (use observation.state, action, "
                f"observation.images.<cam> or a data key)"
            )
        x = np.concatenate(
            [
                np.concatenate(
                    [np.asarray(store.read(p, s), np.float64).reshape(s.stop - s.start, -1) for p in parts], 1
                )
                for s in slices
            ]
        )
        out[key] = {
            "mean": x.mean(0).astype(np.float32),
            "std": x.std(0).astype(np.float32),
            "min": x.min(0).astype(np.float32),
            "max": x.max(0).astype(np.float32),
        }
    return out
