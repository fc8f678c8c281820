"""PyTorch reference for `reincarnate bench updates --filter sac/mlp`: the same SAC update
(CleanRL's sac_continuous_action.py) at the same sizes, on 2 CPU threads.

Sizes: obs 17, 6 actions, batch 256, actor and twin critics 256-256 ReLU MLPs, a 10k-transition
buffer of random data. One update = sample, critic step (both critics), actor step and
temperature step twice every second update (CleanRL's policy_frequency = 2), Polyak target
(tau 0.005). Prints one JSON line in the `bench` format.

    python3 benches/pytorch_sac_update.py [--seconds 10] [--threads 2]
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

OBS, ACT, BATCH, HIDDEN, BUFFER = 17, 6, 256, 256, 10_000
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class SoftQ(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(OBS + ACT, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, HIDDEN)
        self.fc3 = nn.Linear(HIDDEN, 1)

    def forward(self, x, a):
        x = torch.cat([x, a], 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Actor(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(OBS, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, HIDDEN)
        self.mean = nn.Linear(HIDDEN, ACT)
        self.log_std = nn.Linear(HIDDEN, ACT)

    def get_action(self, x):
        h = F.relu(self.fc2(F.relu(self.fc1(x))))
        mean = self.mean(h)
        log_std = torch.tanh(self.log_std(h))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        normal = torch.distributions.Normal(mean, log_std.exp())
        u = normal.rsample()
        a = torch.tanh(u)
        log_prob = (normal.log_prob(u) - torch.log(1 - a.pow(2) + 1e-6)).sum(1, keepdim=True)
        return a, log_prob


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    obs = torch.randn(BUFFER, OBS)
    next_obs = torch.randn(BUFFER, OBS)
    actions = torch.rand(BUFFER, ACT) * 2 - 1
    rewards = torch.randn(BUFFER, 1)
    dones = torch.zeros(BUFFER, 1)

    actor, qf1, qf2 = Actor(), SoftQ(), SoftQ()
    qf1_t, qf2_t = SoftQ(), SoftQ()
    qf1_t.load_state_dict(qf1.state_dict())
    qf2_t.load_state_dict(qf2.state_dict())
    q_opt = torch.optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=1e-3)
    a_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    log_alpha = torch.zeros(1, requires_grad=True)
    alpha_opt = torch.optim.Adam([log_alpha], lr=1e-3)
    target_entropy = -float(ACT)

    def update(step):
        idx = torch.randint(0, BUFFER, (BATCH,))
        o, a, r, no, d = obs[idx], actions[idx], rewards[idx], next_obs[idx], dones[idx]
        alpha = log_alpha.exp().item()
        with torch.no_grad():
            na, nlp = actor.get_action(no)
            q_next = torch.min(qf1_t(no, na), qf2_t(no, na)) - alpha * nlp
            y = r + (1 - d) * 0.99 * q_next
        q_loss = F.mse_loss(qf1(o, a), y) + F.mse_loss(qf2(o, a), y)
        q_opt.zero_grad()
        q_loss.backward()
        q_opt.step()
        if step % 2 == 0:
            for _ in range(2):
                pi, lp = actor.get_action(o)
                a_loss = (log_alpha.exp().item() * lp - torch.min(qf1(o, pi), qf2(o, pi))).mean()
                a_opt.zero_grad()
                a_loss.backward()
                a_opt.step()
                with torch.no_grad():
                    _, lp = actor.get_action(o)
                al = (-log_alpha.exp() * (lp + target_entropy)).mean()
                alpha_opt.zero_grad()
                al.backward()
                alpha_opt.step()
        with torch.no_grad():
            for net, tgt in ((qf1, qf1_t), (qf2, qf2_t)):
                for p_, t_ in zip(net.parameters(), tgt.parameters()):
                    t_.mul_(0.995).add_(p_, alpha=0.005)

    for s in range(10):
        update(s)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        update(n)
        n += 1
    rate = n / (time.perf_counter() - start)
    print(json.dumps({"name": "updates/pytorch-sac/mlp-256-256/b256", "value": rate,
                      "unit": "updates/s"}))


if __name__ == "__main__":
    main()
