"""An SB3 ``VecEnv`` over a gymnasium ``VectorEnv``: SB3 algorithms on gymnasium's vectorised envs.

:class:`GymnasiumVecEnv` gives a ``gymnasium.vector.VectorEnv`` (``gym.make_vec(...)``, ``SyncVectorEnv``,
``AsyncVectorEnv`` or an env's own numpy-vectorised class) SB3's ``VecEnv`` interface, with SB3's semantics: a finished
sub-env is reset inside ``step``, its last observation is ``infos[i]["terminal_observation"]``,
``infos[i]["TimeLimit.truncated"]`` says a time limit ended it, and ``infos[i]["episode"]`` holds the episode's return
and length (as SB3's ``Monitor``), so callbacks, ``ep_info_buffer`` and the time-limit bootstrap work as with a
``DummyVecEnv``. Batched numpy arrays go through without a per-env Python loop.

The vector env must reset a finished sub-env in the same step (``autoreset_mode=AutoresetMode.SAME_STEP``, which
``gym.make_vec`` accepts for ``"sync"`` and ``"async"``): gymnasium's default ``NEXT_STEP`` mode resets one step later,
in a step whose action is ignored, and SB3's ``VecEnv`` contract (the next episode's first observation returned with
the ``done``) cannot be met without an extra step of every other sub-env; such an env is refused with the fix.

Example::

    >>> import gymnasium as gym
    >>> from sb3_pg_extras import GymnasiumVecEnv
    >>> vec = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync",
    ...                    vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    >>> env = GymnasiumVecEnv(vec)
    >>> env.reset().shape
    (4, 4)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

__all__ = ["GymnasiumVecEnv"]


def _split_infos(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """gymnasium's vector info dict (``key`` array + ``_key`` mask) as SB3's list of per-env dicts."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}")
        for i in range(n) if mask is None else np.flatnonzero(mask):
            out[i][key] = _split_infos(value, n)[i] if isinstance(value, dict) else value[i]
    return out


class GymnasiumVecEnv(VecEnv):
    """SB3 ``VecEnv`` over a gymnasium ``VectorEnv`` (see the module docstring).

    :param env: a ``gymnasium.vector.VectorEnv`` whose ``metadata["autoreset_mode"]`` is ``AutoresetMode.SAME_STEP``.
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        if not isinstance(env, gym.vector.VectorEnv):
            raise TypeError(
                f"env: expected a gymnasium.vector.VectorEnv (e.g. gym.make_vec(...)), got {type(env).__name__}; "
                "wrap a single env with stable_baselines3's make_vec_env instead."
            )
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if isinstance(mode, str):
            mode = AutoresetMode(mode)
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"env: its autoreset mode is {mode}, but SB3's VecEnv returns the next episode's first observation in "
                "the step that ends an episode (AutoresetMode.SAME_STEP); in NEXT_STEP mode the reset happens one step "
                "later, in a step whose action is ignored, which would be trained on as a real transition. Build it "
                'with gym.make_vec(env_id, num_envs, vectorization_mode="sync" or "async", '
                "vector_kwargs={'autoreset_mode': gym.vector.AutoresetMode.SAME_STEP})."
            )
        self.env = env
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None
        self._episode_returns = np.zeros(self.num_envs, dtype=np.float64)
        self._episode_lengths = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self) -> VecEnvObs:
        """Reset every sub-env, with the per-env seeds of ``seed(base)`` (``base + i``, as SB3's vec envs) once."""
        seeds = list(self._seeds)
        obs, infos = self.env.reset(seed=None if all(s is None for s in seeds) else seeds)
        self._reset_seeds()
        self.reset_infos = _split_infos(infos, self.num_envs)
        self._episode_returns[:] = 0.0
        self._episode_lengths[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async must be called before step_wait"
        obs, rewards, terminated, truncated, infos = self.env.step(self._actions)
        self._actions = None
        dones = np.logical_or(terminated, truncated)
        self._episode_returns += rewards
        self._episode_lengths += 1
        per_env = _split_infos({k: v for k, v in infos.items() if k not in ("final_obs", "_final_obs")}, self.num_envs)
        for i in np.flatnonzero(dones):
            info = per_env[i]
            final_info = info.pop("final_info", None)
            if isinstance(final_info, dict):
                info.update(final_info)
            info["terminal_observation"] = infos["final_obs"][i]
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            info["episode"] = {"r": float(self._episode_returns[i]), "l": int(self._episode_lengths[i]), "t": 0.0}
            self._episode_returns[i] = 0.0
            self._episode_lengths[i] = 0
        return obs, np.asarray(rewards, dtype=np.float32), dones, per_env

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vector env's attribute, once per requested sub-env (a vector env has one object for all)."""
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list:
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """True for SB3's ``Monitor`` only (its ``infos["episode"]`` are built in, so ``evaluate_policy`` reads them)."""
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]
