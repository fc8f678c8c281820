"""PyTorch reference for `reincarnate bench updates --filter simbav2`: the same SimbaV2 update
(Lee et al. 2025, as `--algo simbav2` implements it) at the same sizes, on 2 CPU threads.

Sizes: obs 17, 6 actions, batch 256; actor 1 hyperspherical block × 128, twin critics 2 blocks
× 512 (MLP expansion 4), categorical critics with 101 atoms on [-5, 5]; a 2,000-transition
buffer of random data. One update = sample, actor step (critics' weights frozen), temperature
step, critic step (both critics, C51-projected target from the target critic of lower expected
value, entropy term in the reward), every kernel re-projected onto unit rows after its
optimiser step, Polyak target (tau 0.005). Adam without weight decay, lr 1e-4. Prints one JSON
line in the `bench` format.

    python3 benches/pytorch_simbav2_update.py [--seconds 10] [--threads 2]
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

OBS, ACT, BATCH, ATOMS, V = 17, 6, 256, 101, 5.0


def l2norm(x):
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


class HyperDense(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(o, i))
        nn.init.orthogonal_(self.weight)
        self.project()

    @torch.no_grad()
    def project(self):
        self.weight.div_(self.weight.norm(dim=1, keepdim=True).clamp_min(1e-8))

    def forward(self, x):
        return F.linear(x, self.weight)


class Scaler(nn.Module):
    def __init__(self, d, init, scale):
        super().__init__()
        self.scale = nn.Parameter(torch.full((d,), scale))
        self.factor = init / scale

    def forward(self, x):
        return x * (self.scale * self.factor)


class Embedding(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        s = math.sqrt(2.0 / h)
        self.dense, self.scaler = HyperDense(i + 1, h), Scaler(h, s, s)

    def forward(self, x):
        x = l2norm(torch.cat([x, torch.full_like(x[:, :1], 3.0)], 1))
        return l2norm(self.scaler(self.dense(x)))


class Block(nn.Module):
    def __init__(self, h, n_blocks):
        super().__init__()
        s = math.sqrt(2.0 / h)
        self.w1, self.scaler, self.w2 = HyperDense(h, 4 * h), Scaler(4 * h, s, s), HyperDense(4 * h, h)
        self.alpha = Scaler(h, 1.0 / (n_blocks + 1), 1.0 / math.sqrt(h))

    def forward(self, x):
        h = l2norm(self.w2(F.relu(self.scaler(self.w1(x)))))
        return l2norm(x + self.alpha(h - x))


class Head(nn.Module):
    def __init__(self, h, out):
        super().__init__()
        self.w1, self.scaler, self.w2 = HyperDense(h, h), Scaler(h, 1.0, 1.0), HyperDense(h, out)
        self.bias = nn.Parameter(torch.zeros(out))

    def forward(self, x):
        return self.w2(self.scaler(self.w1(x))) + self.bias


class HyperNet(nn.Module):
    def __init__(self, i, h, n_blocks, outs):
        super().__init__()
        self.embedding = Embedding(i, h)
        self.blocks = nn.ModuleList(Block(h, n_blocks) for _ in range(n_blocks))
        self.heads = nn.ModuleList(Head(h, o) for o in outs)

    def forward(self, x):
        h = self.embedding(x)
        for b in self.blocks:
            h = b(h)
        return [head(h) for head in self.heads]

    def project(self):
        for m in self.modules():
            if isinstance(m, HyperDense):
                m.project()


SUPPORT = torch.linspace(-V, V, ATOMS)


def expected(logits):
    return (F.softmax(logits, -1) * SUPPORT).sum(-1)


def project(rewards, discounts, probs):
    """C51 projection of r + d·z under `probs` onto the support."""
    dz = 2 * V / (ATOMS - 1)
    tz = (rewards[:, None] + discounts[:, None] * SUPPORT[None]).clamp(-V, V)
    b = (tz + V) / dz
    lo, hi = b.floor().long(), b.ceil().long()
    out = torch.zeros_like(probs)
    out.scatter_add_(1, lo, probs * (hi.float() - b + (lo == hi).float()))
    out.scatter_add_(1, hi, probs * (b - lo.float()))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    actor = HyperNet(OBS, 128, 1, [ACT, ACT])
    critics = [HyperNet(OBS + ACT, 512, 2, [ATOMS]) for _ in range(2)]
    targets = [HyperNet(OBS + ACT, 512, 2, [ATOMS]) for _ in range(2)]
    for t, c in zip(targets, critics):
        t.load_state_dict(c.state_dict())
        t.requires_grad_(False)
    critic_params = [p for c in critics for p in c.parameters()]
    log_alpha = torch.tensor(math.log(0.01), requires_grad=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=1e-4)
    critic_opt = torch.optim.Adam(critic_params, lr=1e-4)
    temp_opt = torch.optim.Adam([log_alpha], lr=1e-4)
    n = 2_000
    buf = {
        "obs": torch.randn(n, OBS),
        "act": torch.rand(n, ACT) * 2 - 1,
        "rew": torch.randn(n),
        "next": torch.randn(n, OBS),
        "disc": torch.full((n,), 0.99),
    }
    target_entropy = -0.5 * ACT

    def policy(obs):
        mean, log_std = actor(obs)
        log_std = -10.0 + 0.5 * (2.0 + 10.0) * (torch.tanh(log_std) + 1.0)
        std = log_std.exp()
        u = mean + std * torch.randn_like(mean)
        act = torch.tanh(u)
        logp = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(1)
        logp = logp - torch.log(1 - act.pow(2) + 1e-6).sum(1)
        return act, logp

    def update():
        idx = torch.randint(0, n, (BATCH,))
        obs, act, rew, nxt, disc = (buf[k][idx] for k in ("obs", "act", "rew", "next", "disc"))
        alpha = log_alpha.exp().item()
        # actor and temperature
        for c in critics:
            c.requires_grad_(False)
        new_act, logp = policy(obs)
        x = torch.cat([obs, new_act], 1)
        q = torch.minimum(*(expected(c(x)[0]) for c in critics))
        loss = (alpha * logp - q).mean()
        actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        actor_opt.step()
        actor.project()
        for c in critics:
            c.requires_grad_(True)
        t_loss = -(log_alpha * (logp.detach().mean() + target_entropy))
        temp_opt.zero_grad(set_to_none=True)
        t_loss.backward()
        temp_opt.step()
        # critics
        with torch.no_grad():
            next_act, next_logp = policy(nxt)
            nx = torch.cat([nxt, next_act], 1)
            l0, l1 = (t(nx)[0] for t in targets)
            pick = (expected(l1) < expected(l0))[:, None]
            probs = torch.where(pick, F.softmax(l1, -1), F.softmax(l0, -1))
            target = project(rew - disc * alpha * next_logp, disc, probs)
        x = torch.cat([obs, act], 1)
        c_loss = sum(-(target * F.log_softmax(c(x)[0], -1)).sum(-1).mean() for c in critics)
        critic_opt.zero_grad(set_to_none=True)
        c_loss.backward()
        critic_opt.step()
        for c in critics:
            c.project()
        with torch.no_grad():
            for t, c in zip(targets, critics):
                torch._foreach_lerp_(list(t.parameters()), list(c.parameters()), 0.005)
        return c_loss.item()

    for _ in range(3):
        update()
    k, start = 0, time.perf_counter()
    while time.perf_counter() - start < a.seconds or k == 0:
        loss = update()
        k += 1
    rate = k / (time.perf_counter() - start)
    assert math.isfinite(loss)
    print(json.dumps({"name": "pytorch/updates/simbav2/actor-1x128-critic-2x512/b256", "value": rate, "unit": "updates/s"}))


if __name__ == "__main__":
    main()
