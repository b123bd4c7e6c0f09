"""Envs that fail inside Ray workers, registered on import for the command line's tests:
``faulty_envs:RaisingCartPole-v0`` raises ``RuntimeError("sensor failure")`` at its 60th step."""

from __future__ import annotations

import gymnasium as gym


class RaisingCartPole(gym.Wrapper):
    """CartPole whose 60th step raises, as a simulator that loses a sensor."""

    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.steps = 0

    def step(self, action: object) -> tuple:
        self.steps += 1
        if self.steps == 60:  # past the steps of the env checker's probe
            raise RuntimeError("sensor failure")
        return self.env.step(action)


if "RaisingCartPole-v0" not in gym.registry:
    gym.register("RaisingCartPole-v0", entry_point=RaisingCartPole)
