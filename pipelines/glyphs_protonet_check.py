"""Difficulty check of a character set: a small Prototypical network trained for a few minutes.

Usage: python pipelines/glyphs_protonet_check.py [--manifest glyphs] [--episodes 2000]
       [--way 5] [--shot 1] [--query 15] [--seed 0] [--test-episodes 1000]
       [--params '{"point_jitter": 0.07}']

The network is the 4-block ConvNet of the few-shot papers (conv3x3-BN-ReLU-maxpool, 64
channels), trained episodically on ``train`` with squared Euclidean distance to class means
(Snell et al.) and Adam 1e-3, one thread. It prints the val accuracy every 500 episodes and
the final 1-shot and 5-shot 5-way accuracy on val and test (mean ± 95 % CI). ``--params``
overrides the glyphs generator params (a temporary manifest is written next to the cache):
for calibrating the set on val, not a few-shot method (those live in ``dafsl/fewshot/``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dafsl.data import cache_root  # noqa: E402
from dafsl.errors import exit_on_error  # noqa: E402
from dafsl.fewshot.data import CharacterSet, EpisodeSampler, load_characters  # noqa: E402
from dafsl.manifest import load_manifest  # noqa: E402


def conv4(channels: int = 64) -> nn.Module:
    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                             nn.MaxPool2d(2))

    return nn.Sequential(block(1, channels), *[block(channels, channels) for _ in range(3)],
                         nn.Flatten())


def proto_logits(net: nn.Module, data: CharacterSet, ep, way: int, shot: int) -> torch.Tensor:
    """(way*query, way) negative squared distances of query embeddings to class means."""
    z = net(data.images[torch.cat([ep.support_idx, ep.query_idx])])
    zs, zq = z[:way * shot], z[way * shot:]
    protos = zs.view(way, shot, -1).mean(1)
    return -torch.cdist(zq, protos) ** 2


@torch.no_grad()
def evaluate(net: nn.Module, data: CharacterSet, way: int, shot: int, query: int,
             episodes: int, seed: int) -> tuple[float, float]:
    net.eval()
    accs = [(proto_logits(net, data, ep, way, shot).argmax(1) == ep.query_labels).double().mean().item()
            for ep in EpisodeSampler(data.labels, way, shot, query, episodes, seed, origin=data.origin)]
    net.train()
    acc = torch.tensor(accs, dtype=torch.float64)
    return acc.mean().item(), 1.96 * acc.std().item() / math.sqrt(len(acc))


def with_params(manifest: str, params: dict) -> str:
    raw = json.loads(load_manifest(manifest).path.read_text())
    raw["source"]["params"] = {**raw["source"].get("params", {}), **params}
    raw["name"] = raw["name"] + "-variant"
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_root() / "manifests" / f"{raw['name']}-{digest}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))
    return str(path)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default="glyphs")
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--way", type=int, default=5)
    ap.add_argument("--shot", type=int, default=1)
    ap.add_argument("--query", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-episodes", type=int, default=1000)
    ap.add_argument("--params", type=json.loads, default=None, help="JSON generator params")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    manifest = with_params(args.manifest, args.params) if args.params else args.manifest
    train, val, test = (load_characters(manifest, s) for s in ("train", "val", "test"))
    net = conv4()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    sampler = EpisodeSampler(train.labels, args.way, args.shot, args.query, args.episodes,
                             args.seed, origin=train.origin)
    for i, ep in enumerate(sampler, start=1):
        loss = nn.functional.cross_entropy(proto_logits(net, train, ep, args.way, args.shot),
                                           ep.query_labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 500 == 0 or i == args.episodes:
            acc, ci = evaluate(net, val, 5, 1, 15, 200, seed=1)
            print(f"episode {i}: {time.perf_counter() - t0:.0f} s, loss {loss.item():.3f}, "
                  f"val 1-shot 5-way {acc:.3f} ± {ci:.3f} (200 episodes)", flush=True)
    for name, data in (("val", val), ("test", test)):
        for shot in (1, 5):
            acc, ci = evaluate(net, data, 5, shot, 15, args.test_episodes, seed=2)
            print(f"{data.origin}: ProtoNet {shot}-shot 5-way {acc:.3f} ± {ci:.3f} "
                  f"({args.test_episodes} episodes)")


if __name__ == "__main__":
    main()
