"""The PyTorch side of `reincarnate bench ad`'s training figure: a nanoGPT-style causal
transformer of the same sizes (one token per transition, learned positions, pre-LN blocks,
ReLU MLP of 4·d_model, dropout and attention dropout 0.1, AdamW, gradient clipping at 1),
trained on random Dark-Room-shaped windows, printing training tokens/s in the `bench --json`
format:

    python3 benches/pytorch_ad_train.py --threads 2 --layers 4 --heads 4 --d-model 64 --context 256 --batch 32

Compare with `RAYON_NUM_THREADS=2 reincarnate bench ad --json` at the same flags. Needs torch."""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

FEATURES = 18 + 5 + 1 + 1  # one-hot (x, y) on 9x9, previous action, previous reward, has-previous
ACTIONS = 5


class Block(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads, self.dropout = heads, dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x):  # (batch, time, d)
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
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

    def forward(self, x):
        h = self.drop(self.embed(x) + self.pos[: x.shape[1]])
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.ln(h))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Gpt(a.layers, a.heads, a.d_model, a.context)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.99), weight_decay=1e-4)
    x = torch.zeros(a.batch, a.context, FEATURES)
    x[..., torch.randint(0, 9, ())] = 1.0
    y = torch.randint(0, ACTIONS, (a.batch, a.context))

    def step():
        loss = F.cross_entropy(model(x).reshape(-1, ACTIONS), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < a.seconds:
        step()
        n += 1
    rate = n * a.batch * a.context / (time.perf_counter() - start)
    name = f"pytorch/ad/train/L{a.layers}-H{a.heads}-d{a.d_model}-c{a.context}-b{a.batch}"
    print(json.dumps({"name": name, "value": rate, "unit": "tokens/s"}))
    assert math.isfinite(rate)


if __name__ == "__main__":
    main()
