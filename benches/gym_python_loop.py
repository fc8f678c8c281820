"""Steps/s of Gymnasium environments stepped in a plain Python loop with random actions: the
reference for `reincarnate bench envs --filter gym` (a binary built with `--features gym`).

    .venv/bin/python benches/gym_python_loop.py [--seconds S]

Prints one {"name", "value", "unit"} object per line, as `bench envs --json` does.
"""

import argparse
import json
import time

import gymnasium as gym
import numpy as np

try:
    import ale_py

    gym.register_envs(ale_py)
except ImportError:
    pass

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, default=2.0)
args = parser.parse_args()

for env_id in ["CartPole-v1", "Pendulum-v1", "Hopper-v5", "ALE/Breakout-v5"]:
    env = gym.make(env_id)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        sample = lambda: int(rng.integers(space.n))
    else:
        sample = lambda: rng.uniform(space.low, space.high).astype(space.dtype)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        for _ in range(100):
            _, _, term, trunc, _ = env.step(sample())
            steps += 1
            if term or trunc:
                env.reset()
    rate = steps / (time.perf_counter() - start)
    print(json.dumps({"name": f"envs/gym:{env_id}/single (python loop)", "value": rate, "unit": "steps/s"}))
