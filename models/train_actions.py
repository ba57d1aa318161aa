"""Train the action recognizer `actions` (C3D-style) on generated stick-figure clips.

Dev-only (needs torch): see models/README.md for the environment. Reproduce with
    .venv-train/bin/python models/train_actions.py
Input: clips of 8 RGB frames of 48x48 taken at 15 fps (the card's frame_rate). The network:
CONV_3D 3x3x3 (stride 1,2,2) 16 -> pool 1x2x2 -> CONV_3D 32 -> pool 2x2x2 -> CONV_3D 64 ->
pool 2x2x2 -> CONV_3D 64 -> pool 2x1x1 -> FC 128 -> FC 6 + softmax. Trained in torch, exported
with GraphBuilder (NCDHW -> NDHWC), accuracy measured by running the .tflite file.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch
from common import (
    HELD_OUT_SEED,
    HELD_OUT_TEXT,
    MODELS_DIR,
    cached_dataset,
    log,
    save_model,
    tflite_accuracy,
)
from torch import nn

from edge_app.inference.builder import GraphBuilder
from edge_app.inference.card import Accuracy, InputSpec, ModelCard
from edge_app.inference.interpreter import Runner, runtime_name
from edge_app.sensors.patterns import ACTIONS, render_clip

FRAMES, SIZE, FPS, STRIDE = 8, 48, 15.0, 4
SPEC = InputSpec(
    shape=(1, FRAMES, SIZE, SIZE, 3), layout="NDHWC", resize="stretch", mean=(127.5,), std=(127.5,)
)
CHANNELS = (16, 32, 64, 64)
POOLS = ((1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 1, 1))
HIDDEN = 128
REPRODUCE = ".venv-train/bin/python models/train_actions.py"
_FLIP = {ACTIONS.index("walking_left"): ACTIONS.index("walking_right")}
_FLIP |= {v: k for k, v in _FLIP.items()}


def render(label: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    fps = float(rng.uniform(0.8, 1.25)) * FPS  # some tolerance to the camera's real rate
    return render_clip(label, FRAMES, height, width, rng, fps=fps)


def make_net() -> nn.Sequential:
    # TFLite SAME padding for a stride-2 3x3 conv pads (0, 1) on H and W: pad explicitly.
    layers: list[nn.Module] = [
        nn.ConstantPad3d((0, 1, 0, 1, 1, 1), 0.0),
        nn.Conv3d(3, CHANNELS[0], 3, stride=(1, 2, 2)),
        nn.ReLU(),
        nn.MaxPool3d(POOLS[0]),
    ]
    for c_in, c_out, pool in zip(CHANNELS[:-1], CHANNELS[1:], POOLS[1:], strict=True):
        layers += [nn.Conv3d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool3d(pool)]
    flat = CHANNELS[-1] * 1 * 3 * 3
    layers += [nn.Flatten(), nn.Linear(flat, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, len(ACTIONS))]
    return nn.Sequential(*layers)


def _augment(xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror (walking left <-> right swap labels), contrast, brightness and noise."""
    flip = torch.rand(len(xb), generator=gen) < 0.5
    xb = torch.where(flip[:, None, None, None, None], xb.flip(-1), xb)
    for i in torch.nonzero(flip).flatten().tolist():
        yb[i] = _FLIP.get(int(yb[i]), int(yb[i]))
    xb = xb * (0.8 + 0.4 * torch.rand(len(xb), 1, 1, 1, 1, generator=gen))
    xb = xb + 0.2 * (torch.rand(len(xb), 1, 1, 1, 1, generator=gen) - 0.5)
    return xb + 0.04 * torch.randn(xb.shape, generator=gen)


def train(net: nn.Sequential, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(x).permute(0, 4, 1, 2, 3).contiguous()  # NDHWC -> NCDHW
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    batch = 32
    steps = epochs * ((len(xt) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        total, hits = 0.0, 0
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            yb = yt[idx].clone()
            xb = _augment(xt[idx], yb, gen)
            logits = net(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            hits += int((logits.argmax(1) == yb).sum())
        log.info("epoch %d loss %.4f train acc %.3f", epoch + 1, total / len(xt), hits / len(xt))


def export(net: nn.Sequential) -> bytes:
    """The trained weights as a float .tflite; torch layouts converted to TFLite's."""
    convs = [m for m in net if isinstance(m, nn.Conv3d)]
    fcs = [m for m in net if isinstance(m, nn.Linear)]
    b = GraphBuilder(description="edge-app actions recognizer (C3D-style)")
    x = b.input("clip", SPEC.shape)
    for i, (conv, pool) in enumerate(zip(convs, POOLS, strict=True), start=1):
        w = conv.weight.detach().numpy().transpose(2, 3, 4, 1, 0)  # (out,in,d,h,w)->(d,h,w,in,out)
        stride = (1, 2, 2) if i == 1 else (1, 1, 1)
        bias = conv.bias.detach().numpy()
        x = b.conv3d(x, w, bias, stride=stride, activation="relu", name=f"conv{i}")
        x = b.max_pool3d(x, pool, name=f"pool{i}")
    _, d, h, w_, c = x.shape
    x = b.flatten(x, name="flatten")
    first = fcs[0].weight.detach().numpy()
    first = first.reshape(-1, c, d, h, w_).transpose(0, 2, 3, 4, 1).reshape(len(first), -1)
    x = b.fully_connected(x, first, fcs[0].bias.detach().numpy(), activation="relu", name="fc1")
    x = b.fully_connected(
        x, fcs[1].weight.detach().numpy(), fcs[1].bias.detach().numpy(), name="fc2"
    )
    b.output(b.softmax(x, name="softmax"), name="probabilities")
    return b.to_bytes()


def check_export(net: nn.Module, model: bytes, x: np.ndarray) -> None:
    """The .tflite file must compute what torch computes (layout conversions right)."""
    net.eval()
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x).permute(0, 4, 1, 2, 3)), dim=1).numpy()
    runner = Runner(model)
    got = np.concatenate([next(iter(runner.run(s[None]).values())) for s in x])
    diff = float(np.abs(got - expected).max())
    log.info("export check: max |tflite - torch| = %.2e", diff)
    if diff > 1e-4:
        raise SystemExit(f"export mismatch: {diff}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=450)
    parser.add_argument("--held-out-per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    start = time.time()
    net = make_net()
    net(torch.zeros(1, 3, *SPEC.shape[1:4]))  # fail fast on a shape mistake
    x, y = cached_dataset(ACTIONS, args.per_class, args.seed, SPEC, render)
    xh, yh = cached_dataset(ACTIONS, args.held_out_per_class, HELD_OUT_SEED, SPEC, render)
    log.info("data: %d train, %d held out, %.0f s", len(y), len(yh), time.time() - start)
    train(net, x, y, args.epochs, args.seed)
    model = export(net)
    check_export(net, model, xh[:8])
    acc = tflite_accuracy(model, xh, yh)
    log.info(".tflite held-out accuracy %.4f", acc)
    held_out = HELD_OUT_TEXT.format(
        n=len(yh), per=args.held_out_per_class, seed=HELD_OUT_SEED, runtime=runtime_name()
    )
    held_out += "; clips of 8 frames at 12-19 fps"
    card = ModelCard(
        name="actions",
        task="action",
        file="actions.tflite",
        sha256="0" * 64,  # filled in by save_model
        labels=ACTIONS,
        input=SPEC,
        frames_per_clip=FRAMES,
        clip_stride=STRIDE,
        frame_rate=FPS,
        accuracy=Accuracy(value=round(acc, 4), samples=len(yh), held_out=held_out),
        reproduce=REPRODUCE,
        description="A stick figure waving, jumping, walking left or right, squatting or "
        "standing still (edge_app.sensors.patterns), seen by a camera at 15 fps.",
    )
    save_model(MODELS_DIR / "actions", card, model)
    log.info("done in %.0f s", time.time() - start)
    return 0 if acc >= 0.95 else 1


if __name__ == "__main__":
    raise SystemExit(main())
