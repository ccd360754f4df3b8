"""Helpers shared by the SB3 tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def capture_training_batches(model):
    """Record ``(batch, estimate)`` of every update of an episodic algorithm (spies on ``model._advantages``)."""
    seen = []
    advantages = model._advantages

    def spy(batch, values=None):
        estimate = advantages(batch, values)
        seen.append((batch, estimate))
        return estimate

    model._advantages = spy
    return seen


class PointMass3D(gym.Env):
    """A cheap 3-dim Box-action env (a damped point mass pushed towards the origin), for the multi-dimensional
    TRPO tests: ``Box(-1, 1, (3,))`` actions, 6-dim observations, terminated when it leaves the unit ball x 3,
    truncated after ``max_steps``."""

    def __init__(self, max_steps: int = 40):
        self.observation_space = spaces.Box(-np.inf, np.inf, (6,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.max_steps = max_steps
        self.state = np.zeros(6)
        self.t = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.state = np.concatenate([self.np_random.uniform(-1.0, 1.0, 3), np.zeros(3)])
        self.t = 0
        return self.state.astype(np.float32), {}

    def step(self, action):
        pos, vel = self.state[:3], self.state[3:]
        vel = 0.9 * vel + 0.1 * np.clip(action, -1.0, 1.0)
        pos = pos + vel
        self.state = np.concatenate([pos, vel])
        self.t += 1
        terminated = bool(np.linalg.norm(pos) > 3.0)
        reward = float(-np.linalg.norm(pos) - 0.01 * np.square(action).sum())
        return self.state.astype(np.float32), reward, terminated, self.t >= self.max_steps, {}
