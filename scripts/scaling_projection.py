#!/usr/bin/env python3
"""Projected data-parallel scaling of adain-train on N GPUs (README, "Training on
several processes"). Standard library only.

Model: one step = compute (t_step, measured) + one ring all-reduce of the
decoder's gradients, not overlapped with the backward pass (adain-train reduces
after backward). A ring all-reduce moves 2 (N-1)/N x S bytes through every link
and takes 2 (N-1) latency hops:

    t_ar(N) = 2 (N-1)/N * S / bandwidth + 2 (N-1) * latency

S = 3,505,219 parameters x 4 bytes = 14.0 MB (f32 gradients).

Weak scaling (the per-GPU batch stays 8, the global batch grows to 8 N): the
throughput is N * t_step / (t_step + t_ar(N)) times one GPU's. Strong scaling
at the recipe's global batch of 8 ends at 8 GPUs (one image each), and a GPU
given one 128 px image is mostly idle, so it is not projected.

usage: scripts/scaling_projection.py [t_step_seconds ...]
"""

import sys

PARAMS = 3_505_219
S = PARAMS * 4
LATENCY = 10e-6  # per hop, a typical RDMA/NCCL figure; the bandwidth term dominates here
LINKS = [("25 Gb/s", 25e9 / 8), ("100 Gb/s", 100e9 / 8)]
NS = [1, 2, 4, 8, 16, 32, 64]


def t_ar(n, bw):
    if n == 1:
        return 0.0
    return 2 * (n - 1) / n * S / bw + 2 * (n - 1) * LATENCY


def main():
    steps = [float(a) for a in sys.argv[1:]] or [0.106, 0.424]
    print(f"gradient buffer: {PARAMS:,} f32 = {S / 1e6:.1f} MB\n")
    for t in steps:
        print(f"GPU step {t * 1000:.0f} ms (batch 8 per GPU)")
        head = "| GPUs | " + " | ".join(
            f"all-reduce {name} | speed-up {name}" for name, _ in LINKS
        ) + " |"
        print(head)
        print("|" + "---|" * (1 + 2 * len(LINKS)))
        for n in NS:
            cells = []
            for _, bw in LINKS:
                a = t_ar(n, bw)
                cells.append(f"{a * 1000:.1f} ms")
                cells.append(f"{n * t / (t + a):.1f}x ({100 * t / (t + a):.0f}%)")
            print(f"| {n} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
