"""The PyTorch side of `reincarnate bench updates` for the DQN family: a CleanRL-style DQN update
(sample a minibatch from a replay of 2,000 random transitions, online and target forward passes,
MSE TD loss, backward, Adam step) at the same sizes, printing figures in the `bench --json` format:

    python3 benches/pytorch_dqn_update.py [--threads 2] [--seconds 5]

Cases: CartPole MLP 120-84 at batch 128; MinAtar conv (16 3x3 filters, FC 128, 10x10x4 input,
6 actions) at batch 32. Needs torch."""

import argparse
import copy
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(obs_dim, n_actions):
    return nn.Sequential(nn.Linear(obs_dim, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, n_actions))


class MinAtarNet(nn.Module):
    def __init__(self, channels, n_actions):
        super().__init__()
        self.conv = nn.Conv2d(channels, 16, 3, stride=1)
        self.fc = nn.Linear(16 * 8 * 8, 128)
        self.out = nn.Linear(128, n_actions)

    def forward(self, x):  # x: (batch, 10, 10, C), channels last as the env gives it
        x = F.relu(self.conv(x.permute(0, 3, 1, 2)))
        return self.out(F.relu(self.fc(x.flatten(1))))


def bench(name, net, obs_shape, n_actions, batch, seconds, gamma=0.99):
    target = copy.deepcopy(net)
    opt = torch.optim.Adam(net.parameters(), lr=2.5e-4)
    n = 2000
    obs = (torch.rand((n, *obs_shape)) < 0.3).float()
    nxt = (torch.rand((n, *obs_shape)) < 0.3).float()
    act = torch.randint(0, n_actions, (n,))
    rew = torch.rand(n)
    done = (torch.rand(n) < 0.05).float()

    def update():
        idx = torch.randint(0, n, (batch,))
        with torch.no_grad():
            target_max = target(nxt[idx]).max(dim=1).values
            td_target = rew[idx] + gamma * target_max * (1 - done[idx])
        q = net(obs[idx]).gather(1, act[idx].unsqueeze(1)).squeeze(1)
        loss = F.mse_loss(td_target, q)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(20):
        update()
    done_n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            update()
        done_n += 50
    rate = done_n / (time.perf_counter() - start)
    print(json.dumps({"name": f"pytorch/updates/{name}", "value": rate, "unit": "updates/s"}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bench("dqn/cartpole-mlp-120-84/b128", mlp(4, 2), (4,), 2, 128, args.seconds)
    bench("dqn/minatar-conv/b32", MinAtarNet(4, 6), (10, 10, 4), 6, 32, args.seconds)


if __name__ == "__main__":
    main()
