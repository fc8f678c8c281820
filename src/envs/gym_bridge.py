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


def _vector_step(venv, actions):
    """One step of a SyncVectorEnv (same-step autoreset): the observations to act on next,
    the true next observations (an ended episode's last), rewards and flags."""
    space = venv.single_action_space
    if isinstance(space, gym.spaces.Discrete):
        a = np.asarray(actions, dtype=np.int64) + int(space.start)
    else:
        a = np.asarray(actions, dtype=space.dtype).reshape((venv.num_envs,) + space.shape)
    obs, reward, terminated, truncated, info = venv.step(a)
    nxt = obs
    if np.logical_or(terminated, truncated).any():
        nxt = np.array(obs, copy=True)
        for i in np.nonzero(info["_final_obs"])[0]:
            nxt[i] = info["final_obs"][i]
    return obs, nxt, np.asarray(reward, np.float64), terminated, truncated


def _worker(conn, env_id, kwargs_json, max_episode_steps, preset, k):
    """A worker process: `k` envs in Gymnasium's SyncVectorEnv, one message per batched step."""
    import functools
    import traceback

    try:
        fn = functools.partial(_make_env, env_id, kwargs_json, max_episode_steps, preset)
        venv = gym.vector.SyncVectorEnv(
            [fn] * k, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        )
        conn.send(("ok", None))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            cmd, data = conn.recv()
        except EOFError:
            return
        try:
            if cmd == "reset":
                conn.send(("ok", venv.reset(seed=[int(s) for s in data])[0]))
            elif cmd == "step":
                conn.send(("ok", _vector_step(venv, data)))
            else:
                venv.close()
                conn.send(("ok", None))
                return
        except BaseException:
            conn.send(("error", traceback.format_exc()))


class Workers:
    """`n` envs in `w` worker processes (spawned with `python`: the embedded interpreter's own
    executable is the Rust binary), each stepping its share of the envs together; an env whose
    episode ends is reset in the same step, continuing its generator."""

    def __init__(self, env_id, kwargs_json, max_episode_steps, preset, n, w, python):
        import multiprocessing

        multiprocessing.set_executable(python)
        ctx = multiprocessing.get_context("spawn")
        w = max(1, min(w, n))
        self.sizes = [n // w + (1 if i < n % w else 0) for i in range(w)]
        self.conns, self.procs = [], []
        for k in self.sizes:
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=_worker,
                args=(child, env_id, kwargs_json, max_episode_steps, preset, k),
                daemon=True,
            )
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        self._gather()

    def _gather(self):
        out = []
        for i, c in enumerate(self.conns):
            try:
                status, value = c.recv()
            except EOFError:
                raise RuntimeError(f"worker process {i} died") from None
            if status != "ok":
                raise RuntimeError(f"in worker process {i}:\n{value}")
            out.append(value)
        return out

    def _scatter(self, cmd, items):
        start = 0
        for c, k in zip(self.conns, self.sizes):
            c.send((cmd, items[start : start + k]))
            start += k

    def reset(self, seeds):
        self._scatter("reset", list(seeds))
        return _obs(np.concatenate(self._gather()))

    def step(self, actions):
        d = len(actions) // sum(self.sizes)
        rows = [actions[i * d : (i + 1) * d] for i in range(sum(self.sizes))]
        self._scatter("step", rows if d > 1 else list(actions))
        parts = self._gather()
        cat = [np.concatenate([p[j] for p in parts]) for j in range(5)]
        return (
            _obs(cat[0]),
            _obs(cat[1]),
            cat[2].tolist(),
            [bool(x) for x in cat[3]],
            [bool(x) for x in cat[4]],
        )

    def close(self):
        for c in self.conns:
            try:
                c.send(("close", None))
                c.recv()
            except (EOFError, OSError, BrokenPipeError):
                pass
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()


def make_vector(env_id, kwargs_json, max_episode_steps, preset, n, w, python):
    """`n` envs in `w` worker processes ([`Workers`]) and the single env's description."""
    _, info = make(env_id, kwargs_json, max_episode_steps, preset)
    return Workers(env_id, kwargs_json, max_episode_steps, preset, n, w, python), info


def vector_reset(venv, seeds):
    return venv.reset(seeds)


def vector_step(venv, actions):
    return venv.step(actions)


def registered_ids():
    """Every id `gymnasium.make` accepts here (Gymnasium's and ale-py's), as JSON."""
    return json.dumps(sorted(gym.registry.keys()))
