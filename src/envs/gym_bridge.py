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


def _make_env(env_id, kwargs_json, max_episode_steps, preset):
    """The env alone, as a worker process builds it (a module-level function: picklable)."""
    return make(env_id, kwargs_json, max_episode_steps, preset)[0]


def make_vector(env_id, kwargs_json, max_episode_steps, preset, n, python):
    """`n` envs in Gymnasium's AsyncVectorEnv (one worker process each, started with `python`:
    the embedded interpreter's own executable is the Rust binary), resetting an env in the same
    step its episode ends, with the episode's last observation in `final_obs`."""
    import functools
    import multiprocessing

    multiprocessing.set_executable(python)
    _, info = make(env_id, kwargs_json, max_episode_steps, preset)
    fns = [functools.partial(_make_env, env_id, kwargs_json, max_episode_steps, preset)] * n
    venv = gym.vector.AsyncVectorEnv(
        fns,
        context="spawn",
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    return venv, info


def vector_reset(venv, seeds):
    obs, _ = venv.reset(seed=[int(s) for s in seeds])
    return _obs(obs)


def vector_step(venv, actions):
    """One step of every env: the observations to act on next (reset ones where an episode
    ended), the true next observations (the episode's last where it ended), rewards, flags."""
    space = venv.single_action_space
    if isinstance(space, gym.spaces.Discrete):
        a = np.asarray(actions, dtype=np.int64) + int(space.start)
    else:
        a = np.asarray(actions, dtype=space.dtype).reshape((venv.num_envs,) + space.shape)
    obs, reward, terminated, truncated, info = venv.step(a)
    ended = np.logical_or(terminated, truncated)
    nxt = obs
    if ended.any():
        nxt = np.array(obs, copy=True)
        for i in np.nonzero(info["_final_obs"])[0]:
            nxt[i] = info["final_obs"][i]
    return (
        _obs(obs),
        _obs(nxt),
        np.asarray(reward, np.float64).tolist(),
        [bool(x) for x in terminated],
        [bool(x) for x in truncated],
    )


def registered_ids():
    """Every id `gymnasium.make` accepts here (Gymnasium's and ale-py's), as JSON."""
    return json.dumps(sorted(gym.registry.keys()))
