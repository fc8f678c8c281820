"""The pyarrow side of `reincarnate bench io`: writes and reads the same shape of data (10M
Dark-Room-like transitions: 2-D float observations, int64 actions, 20-step episodes, runs of
100k rows) with the same settings (zstd level 1, row groups of the same size), and prints
figures in the `bench --json` format, so the two can be compared on one machine:

    python3 benches/pyarrow_io.py [--rows 10000000]

Needs numpy and pyarrow. Reads are timed with pyarrow's thread pool on and off."""

import argparse
import json
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EPISODE_LEN, RUN_LEN, GRID = 20, 100_000, 9


def history(n, seed=0):
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=np.int64)
    run = (i // RUN_LEN).astype(np.uint32)
    in_run = i % RUN_LEN
    episode = (in_run // EPISODE_LEN).astype(np.uint32)
    step = (in_run % EPISODE_LEN).astype(np.uint32)
    action = rng.integers(0, 5, n, dtype=np.int64)
    moves = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.int64)
    # a random walk restarting at the centre each episode, stepped for all episodes at once
    # (n is a multiple of the episode length, as every run is)
    delta = moves[action].reshape(-1, EPISODE_LEN, 2)
    pos = np.empty_like(delta)
    nxt = np.empty_like(delta)
    p = np.full((delta.shape[0], 2), GRID // 2)
    for k in range(EPISODE_LEN):
        pos[:, k] = p
        p = np.clip(p + delta[:, k], 0, GRID - 1)
        nxt[:, k] = p
    pos, nxt = pos.reshape(-1, 2), nxt.reshape(-1, 2)
    reward = ((nxt[:, 0] == 6) & (nxt[:, 1] == 6)).astype(np.float32)
    fsl = lambda a: pa.FixedSizeListArray.from_arrays(pa.array(a.astype(np.float32).ravel()), 2)
    return pa.table(
        {
            "run": run,
            "task": run % 81,
            "episode": episode,
            "step": step,
            "obs": fsl(pos),
            "action": action,
            "reward": reward,
            "terminated": np.zeros(n, dtype=bool),
            "truncated": step == EPISODE_LEN - 1,
            "next_obs": fsl(nxt),
        }
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--row-group-rows", type=int, default=1 << 20)
    args = ap.parse_args()
    assert args.rows % EPISODE_LEN == 0, "--rows must be a multiple of the episode length (20)"
    table = history(args.rows)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench-io.parquet")
        t0 = time.perf_counter()
        pq.write_table(table, path, compression="zstd", compression_level=1,
                       row_group_size=args.row_group_rows)
        write_s = time.perf_counter() - t0
        figures = [("pyarrow/io/write", args.rows / write_s, "rows/s")]
        for threads in (True, False):
            t0 = time.perf_counter()
            back = pq.read_table(path, use_threads=threads)
            read_s = time.perf_counter() - t0
            assert back.num_rows == args.rows
            name = "pyarrow/io/read" + ("" if threads else "_single_thread")
            figures.append((name, args.rows / read_s, "rows/s"))
        figures.append(("pyarrow/io/file_size", os.path.getsize(path), "bytes"))
    for name, value, unit in figures:
        print(json.dumps({"name": name, "value": value, "unit": unit}))


if __name__ == "__main__":
    main()
