"""The PyTorch side of `reincarnate bench ad`: a nanoGPT-style causal transformer of the same
sizes (one token per transition, learned positions, pre-LN blocks, ReLU MLP of 4·d_model,
dropout and attention dropout 0.1, AdamW, gradient clipping at 1), printing the same figures in
the `bench --json` format:

- training tokens/s on random Dark-Room-shaped windows, and the peak resident memory of the
  training phase (the high-water mark reset before the model is built, as `bench ad` does),
  at each context given;
- frozen evaluation with a KV cache: `--eval-envs` Dark Room environments decoded together, one
  token per environment per step against preallocated key/value buffers, sampling actions from
  the softmax; when the context is full the newest half is re-encoded from position 0 (the
  platform's policy), after the same warm-up of min(context, 200) − 1 or context / 2 steps.

    python3 benches/pytorch_ad.py --threads 2 --layers 4 --heads 4 --d-model 128 \\
        --context 256,1024,4096 --batch 64,16,4 --eval-envs 64

Compare with `RAYON_NUM_THREADS=2 reincarnate bench ad --json` at the same flags. Needs torch."""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

GRID = 9
FEATURES = 2 * GRID + 5 + 1 + 1  # one-hot (x, y), previous action, previous reward, has-previous
ACTIONS = 5
EPISODE = 20


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class Block(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads, self.dropout = heads, dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cache=None, past=0):  # (batch, time, d)
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        if cache is None:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
            )
        else:
            ck, cv = cache
            ck[:, :, past : past + t] = k
            cv[:, :, past : past + t] = v
            k, v = ck[:, :, : past + t], cv[:, :, : past + t]
            if t == 1:
                y = F.scaled_dot_product_attention(q, k, v)
            else:  # re-encoding from position 0 (past == 0)
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.fc2(F.relu(self.fc1(self.ln2(x)))))


class Gpt(nn.Module):
    def __init__(self, layers, heads, d, context, dropout=0.1):
        super().__init__()
        self.embed = nn.Linear(FEATURES, d)
        self.pos = nn.Parameter(torch.zeros(context, d))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, ACTIONS)
        self.heads, self.d = heads, d

    def forward(self, x, caches=None, past=0):
        t = x.shape[1]
        h = self.drop(self.embed(x) + self.pos[past : past + t])
        for i, blk in enumerate(self.blocks):
            h = blk(h, None if caches is None else caches[i], past)
        return self.head(self.ln(h))


def train_rate(a, context, batch):
    reset_peak()
    torch.manual_seed(0)
    model = Gpt(a.layers, a.heads, a.d_model, context)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.99), weight_decay=1e-4)
    x = torch.randn(batch, context, FEATURES)
    y = torch.randint(0, ACTIONS, (batch, context))

    def step():
        loss = F.cross_entropy(model(x).reshape(-1, ACTIONS), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < a.seconds or n == 0:
        step()
        n += 1
    rate = n * batch * context / (time.perf_counter() - start)
    return rate, peak_mb()


class DarkRoom:
    """`n` Dark Room environments (9 × 9, start in the centre, reward 1 on the goal, 20 steps),
    goals cycling over all 81 cells."""

    MOVES = torch.tensor([[0, 0], [0, 1], [0, -1], [-1, 0], [1, 0]])

    def __init__(self, n):
        self.goal = torch.stack([torch.arange(n) % GRID, torch.arange(n) // GRID % GRID], 1)
        self.pos = torch.full((n, 2), GRID // 2)
        self.t = 0

    def step(self, actions):
        self.pos = (self.pos + self.MOVES[actions]).clamp(0, GRID - 1)
        reward = (self.pos == self.goal).all(1).float()
        self.t += 1
        if self.t == EPISODE:
            self.pos.fill_(GRID // 2)
            self.t = 0
        return reward


def tokens(pos, prev_action, prev_reward, has_prev):
    n = pos.shape[0]
    x = torch.zeros(n, FEATURES)
    rows = torch.arange(n)
    x[rows, pos[:, 0]] = 1.0
    x[rows, GRID + pos[:, 1]] = 1.0
    x[rows, 2 * GRID + prev_action] = has_prev
    x[:, -2] = prev_reward
    x[:, -1] = has_prev
    return x


@torch.no_grad()
def eval_rate(a, context):
    torch.manual_seed(0)
    n = a.eval_envs
    model = Gpt(a.layers, a.heads, a.d_model, context).eval()
    hd = a.d_model // a.heads
    caches = [
        (torch.zeros(n, a.heads, context, hd), torch.zeros(n, a.heads, context, hd))
        for _ in range(a.layers)
    ]
    env = DarkRoom(n)
    history = torch.zeros(n, context, FEATURES)  # the tokens in the cache, for re-encoding
    state = {"len": 0, "action": torch.zeros(n, dtype=torch.long), "reward": torch.zeros(n), "has": 0.0}
    keep = context // 2

    def step():
        x = tokens(env.pos, state["action"], state["reward"], state["has"])
        if state["len"] == context:  # full: re-encode the newest `keep` tokens from position 0
            history[:, :keep] = history[:, context - keep :].clone()
            model(history[:, :keep], caches, 0)
            state["len"] = keep
        past = state["len"]
        history[:, past] = x
        logits = model(x.unsqueeze(1), caches, past)[:, -1]
        state["len"] = past + 1
        action = torch.multinomial(F.softmax(logits, -1), 1).squeeze(1)
        state["reward"] = env.step(action)
        state["action"], state["has"] = action, 1.0

    warm = max(min(context, 200) - 1, context // 2)
    for _ in range(warm):
        step()
    n_steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < a.seconds or n_steps == 0:
        step()
        n_steps += 1
    return n_steps * n / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--context", default="256", help="one context or a comma-separated list")
    ap.add_argument("--batch", default="32", help="one batch, or one per context")
    ap.add_argument("--eval-envs", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--filter", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    contexts = [int(c) for c in a.context.split(",")]
    batches = [int(b) for b in a.batch.split(",")]
    if len(batches) == 1:
        batches *= len(contexts)
    assert len(batches) == len(contexts), "--batch: one value, or one per --context"
    for context, batch in zip(contexts, batches):
        tag = f"L{a.layers}-H{a.heads}-d{a.d_model}-c{context}-b{batch}"
        name = f"pytorch/ad/train/{tag}"
        if a.filter in name:
            rate, peak = train_rate(a, context, batch)
            print(json.dumps({"name": name, "value": rate, "unit": "tokens/s"}))
            print(json.dumps({"name": f"{name}/peak-rss", "value": peak, "unit": "MB"}))
            assert math.isfinite(rate)
        name = f"pytorch/ad/eval/{tag}-e{a.eval_envs}/kv-cache"
        if a.filter in name:
            print(json.dumps({"name": name, "value": eval_rate(a, context), "unit": "env-steps/s"}))


if __name__ == "__main__":
    main()
