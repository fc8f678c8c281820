"""The Python half of reincarnate's Gymnasium bridge (cargo feature `gym`).

Loaded once per process into the embedded interpreter; the Rust side calls `make` once per
environment and `reset` / `step` once per call, each returning the observation as one
contiguous vector (uint8 for byte images, else float32) that Rust copies straight out of its
buffer.
"""

import importlib
import json

import gymnasium as gym
import numpy as np

try:  # The Arcade Learning Environment registers the ALE/* ids when present.
    import ale_py

    gym.register_envs(ale_py)
except ImportError:
    pass


def _space(space):
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": [int(d) for d in space.shape],
            "dtype": str(space.dtype),
            "low": np.asarray(space.low, np.float64).ravel().tolist(),
            "high": np.asarray(space.high, np.float64).ravel().tolist(),
        }
    return {"type": type(space).__name__, "repr": repr(space)}


ATARI_MAX_STEPS = 27_000


def _atari(env_id, kwargs, max_episode_steps):
    """The DQN papers' Atari set-up with Gymnasium's wrappers (see reincarnate's envs/gym.rs)."""
    kwargs.setdefault("frameskip", 1)
    kwargs.setdefault("repeat_action_probability", 0.25)
    env = gym.make(env_id, **kwargs)
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=30,
        frame_skip=4,
        screen_size=84,
        terminal_on_life_loss=False,
        grayscale_obs=True,
        scale_obs=False,
    )
    env = gym.wrappers.FrameStackObservation(env, 4)
    # Outermost, so that the limit counts agent steps (each 4 frames).
    return gym.wrappers.TimeLimit(env, max_episode_steps or ATARI_MAX_STEPS)


def make(env_id, kwargs_json, max_episode_steps, preset=None):
    """`gymnasium.make(env_id, **kwargs)`, or for `module:factory` the user's callable."""
    kwargs = json.loads(kwargs_json)
    if preset == "atari":
        env = _atari(env_id, kwargs, max_episode_steps)
        info = {
            "observation_space": _space(env.observation_space),
            "action_space": _space(env.action_space),
            "max_episode_steps": max_episode_steps or ATARI_MAX_STEPS,
        }
        return env, json.dumps(info)
    env = None
    if ":" in env_id:
        module, name = env_id.rsplit(":", 1)
        factory = getattr(importlib.import_module(module), name, None)
        if callable(factory):
            env = factory(**kwargs)
            if not isinstance(env, gym.Env):
                raise TypeError(f"{env_id} returned {type(env).__name__}, not a gymnasium.Env")
            if max_episode_steps:
                env = gym.wrappers.TimeLimit(env, max_episode_steps)
    if env is None:
        if max_episode_steps:
            kwargs["max_episode_steps"] = max_episode_steps
        env = gym.make(env_id, **kwargs)
    spec_steps = env.spec.max_episode_steps if env.spec is not None else None
    if max_episode_steps:
        spec_steps = max_episode_steps
    info = {
        "observation_space": _space(env.observation_space),
        "action_space": _space(env.action_space),
        "max_episode_steps": spec_steps,
    }
    return env, json.dumps(info)


def _obs(obs):
    """uint8 observations cross as bytes; every other dtype as float32."""
    obs = np.asarray(obs)
    if obs.dtype == np.uint8:
        return np.ascontiguousarray(obs).reshape(-1)
    return np.ascontiguousarray(obs, dtype=np.float32).reshape(-1)


def reset(env, seed):
    obs, _ = env.reset(seed=seed)
    return _obs(obs)


def step_discrete(env, action):
    obs, reward, terminated, truncated, _ = env.step(int(env.action_space.start) + action)
    return _obs(obs), float(reward), bool(terminated), bool(truncated)


def step_box(env, action):
    space = env.action_space
    a = np.asarray(action, dtype=space.dtype).reshape(space.shape)
    obs, reward, terminated, truncated, _ = env.step(a)
    return _obs(obs), float(reward), bool(terminated), bool(truncated)


def registered_ids():
    """Every id `gymnasium.make` accepts here (Gymnasium's and ale-py's), as JSON."""
    return json.dumps(sorted(gym.registry.keys()))
