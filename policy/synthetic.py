"""A small generated dataset with the sampler's keys and windowing, for smoke runs, tests and
benchmarks without a recorded store.

Each episode is a smooth joint trajectory (sums of sinusoids with per-episode phases); the
action at a tick is the state a few ticks later (a follower trails its command), and every
camera shows a bright square whose position encodes two joints, so both the state and the
images carry the information a policy needs. Windows follow duet.data.sampler.EpisodeSampler:
observations t-n_obs+1..t, actions from t-n_obs+1 on, edges repeated and flagged as padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from duet.data.keys import ACTION, ACTION_IS_PAD, OBS_IS_PAD, STATE, image_key


class SyntheticEpisodes:
    def __init__(
        self,
        n_episodes: int = 4,
        episode_len: int = 60,
        n_obs_steps: int = 1,
        horizon: int = 20,
        state_dim: int = 14,
        camera_names: Sequence[str] = ("cam_high",),
        image_hw: tuple[int, int] = (48, 64),
        lag: int = 3,
        seed: int = 0,
        episodes: Sequence[int] | None = None,
    ):
        rng = np.random.default_rng(seed)
        self.n_obs_steps, self.horizon = int(n_obs_steps), int(horizon)
        self.camera_names = list(camera_names)
        self.image_hw = tuple(image_hw)
        self.state_dim = self.action_dim = int(state_dim)
        t = np.arange(episode_len + lag)[None, :, None] / 50.0
        freq = rng.uniform(0.3, 1.2, (1, 1, state_dim))
        phase = rng.uniform(0, 2 * np.pi, (n_episodes, 1, state_dim))
        amp = rng.uniform(0.2, 0.8, (1, 1, state_dim))
        traj = (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)  # (E, L+lag, S)
        self._state = traj[:, :episode_len]
        self._action = traj[:, lag : lag + episode_len]
        self.episodes = list(range(n_episodes)) if episodes is None else [int(e) for e in episodes]
        self.episode_len = int(episode_len)

    def __len__(self) -> int:
        return len(self.episodes) * self.episode_len

    def _image(self, state: np.ndarray, cam: int) -> np.ndarray:
        h, w = self.image_hw
        img = np.full((h, w, 3), 40, np.uint8)
        s = max(2, min(h, w) // 6)
        cy = int((0.5 + 0.45 * np.tanh(state[0])) * (h - s))
        cx = int((0.5 + 0.45 * np.tanh(state[1 % len(state)])) * (w - s))
        img[cy : cy + s, cx : cx + s] = (230, 200 - 40 * cam % 200, 60)
        return img

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range (0..{len(self) - 1})")
        e, t = divmod(index, self.episode_len)
        e = self.episodes[e]
        L = self.episode_len
        obs = np.arange(t - self.n_obs_steps + 1, t + 1)
        act = np.arange(t - self.n_obs_steps + 1, t - self.n_obs_steps + 1 + self.horizon)
        obs_c, act_c = np.clip(obs, 0, L - 1), np.clip(act, 0, L - 1)
        out = {
            STATE: self._state[e, obs_c].copy(),
            ACTION: self._action[e, act_c].copy(),
            ACTION_IS_PAD: (act < 0) | (act >= L),
            OBS_IS_PAD: (obs < 0) | (obs >= L),
        }
        for i, cam in enumerate(self.camera_names):
            out[image_key(cam)] = np.stack([self._image(self._state[e, j], i) for j in obs_c])
        return out

    def write_store(self, path, overwrite: bool = False):
        """Write these episodes to a duet zarr store (two follower arms splitting the joints,
        the cameras as recorded images) and return the opened EpisodeStore."""
        from duet.data.layout import ArmSpec, CameraSpec, DatasetSpec
        from duet.data.store import EpisodeStore

        s = self.state_dim
        split = [s // 2, s - s // 2]
        names = ["left_follower", "right_follower"]
        arms = [ArmSpec(n, "follower", [f"j{i}" for i in range(k)]) for n, k in zip(names, split) if k]
        h, w = self.image_hw
        spec = DatasetSpec(
            rate_hz=50.0,
            arms=arms,
            cameras=[CameraSpec(c, w, h) for c in self.camera_names],
            image_codec="lossless",
        )
        store = EpisodeStore.create(path, layout=spec, overwrite=overwrite)
        for e in self.episodes:
            block: dict[str, np.ndarray] = {"action": self._action[e]}
            off = 0
            for arm in arms:
                k = len(arm.joints)
                block[f"{arm.name}.position"] = self._state[e][:, off : off + k]
                off += k
            for i, cam in enumerate(self.camera_names):
                block[f"{cam}.color"] = np.stack([self._image(x, i) for x in self._state[e]])
            with store.episode({"task": "synthetic"}) as ep:
                ep.extend(block)
        return store
