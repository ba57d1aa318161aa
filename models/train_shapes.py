"""Train the image classifier `shapes` (and its int8 twin `shapes_int8`) on generated shapes.

Dev-only (needs torch): see models/README.md for the environment. Reproduce with
    .venv-train/bin/python models/train_shapes.py
The network: 3 x (conv 3x3 + ReLU + max-pool 2x2), then FC 128 - FC 64 - FC 6 + softmax, on
32x32 RGB crops. Weights are trained in torch, exported with GraphBuilder (NCHW -> NHWC), and
the accuracy in the card is measured by running the .tflite file on a held-out set.
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
    log,
    make_dataset,
    render_shape,
    save_model,
    tflite_accuracy,
)
from torch import nn

from edge_app.inference.builder import GraphBuilder
from edge_app.inference.card import Accuracy, InputQuantization, InputSpec, ModelCard
from edge_app.inference.interpreter import Runner, runtime_name
from edge_app.inference.quantize import quantize_int8
from edge_app.sensors.patterns import SHAPES

SIZE = 32
SPEC = InputSpec(shape=(1, SIZE, SIZE, 3), resize="crop", mean=(127.5,), std=(127.5,))
CHANNELS = (16, 32, 64)
HIDDEN = (128, 64)
REPRODUCE = ".venv-train/bin/python models/train_shapes.py"


def make_net() -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 3
    for c in CHANNELS:
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c
    flat = c_in * (SIZE // 8) ** 2
    layers += [nn.Flatten(), nn.Linear(flat, HIDDEN[0]), nn.ReLU()]
    layers += [nn.Linear(HIDDEN[0], HIDDEN[1]), nn.ReLU(), nn.Linear(HIDDEN[1], len(SHAPES))]
    return nn.Sequential(*layers)


def train(net: nn.Sequential, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps = epochs * ((len(xt) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), 64):
            idx = order[i : i + 64]
            xb = xt[idx]
            xb = xb * (0.8 + 0.4 * torch.rand(len(idx), 1, 1, 1, generator=gen))  # contrast
            xb = xb + 0.05 * torch.randn(xb.shape, generator=gen)
            loss = nn.functional.cross_entropy(net(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log.info("epoch %d loss %.4f", epoch + 1, total / len(xt))


def export(net: nn.Sequential) -> bytes:
    """The trained weights as a float .tflite; torch layouts converted to TFLite's."""
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    fcs = [m for m in net if isinstance(m, nn.Linear)]
    b = GraphBuilder(description="edge-app shapes classifier")
    x = b.input("image", SPEC.shape)
    for i, conv in enumerate(convs, start=1):
        w = conv.weight.detach().numpy().transpose(0, 2, 3, 1)  # OIHW -> OHWI
        x = b.conv2d(x, w, conv.bias.detach().numpy(), activation="relu", name=f"conv{i}")
        x = b.max_pool2d(x, name=f"pool{i}")
    x = b.flatten(x, name="flatten")
    _, h, w_, c = (1, SIZE // 8, SIZE // 8, CHANNELS[-1])
    for i, fc in enumerate(fcs, start=1):
        weights = fc.weight.detach().numpy()
        if i == 1:  # torch flattened C,H,W; TFLite flattens H,W,C
            weights = weights.reshape(-1, c, h, w_).transpose(0, 2, 3, 1).reshape(len(weights), -1)
        act = "relu" if i < len(fcs) else None
        x = b.fully_connected(x, weights, fc.bias.detach().numpy(), activation=act, name=f"fc{i}")
    b.output(b.softmax(x, name="softmax"), name="probabilities")
    return b.to_bytes()


def check_export(net: nn.Module, model: bytes, x: np.ndarray) -> None:
    """The .tflite file must compute what torch computes (layout conversions right)."""
    net.eval()
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x).permute(0, 3, 1, 2)), dim=1).numpy()
    runner = Runner(model)
    got = np.concatenate([next(iter(runner.run(s[None]).values())) for s in x])
    diff = float(np.abs(got - expected).max())
    log.info("export check: max |tflite - torch| = %.2e", diff)
    if diff > 1e-4:
        raise SystemExit(f"export mismatch: {diff}")


def card_for(name: str, spec: InputSpec, acc: float, n: int, description: str) -> ModelCard:
    per = n // len(SHAPES)
    held_out = HELD_OUT_TEXT.format(n=n, per=per, seed=HELD_OUT_SEED, runtime=runtime_name())
    return ModelCard(
        name=name,
        task="image",
        file=f"{name}.tflite",
        sha256="0" * 64,  # filled in by save_model
        labels=SHAPES,
        input=spec,
        accuracy=Accuracy(value=round(acc, 4), samples=n, held_out=held_out),
        reproduce=REPRODUCE,
        description=description,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--held-out-per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    start = time.time()
    x, y = make_dataset(SHAPES, args.per_class, args.seed, SPEC, render_shape)
    xh, yh = make_dataset(SHAPES, args.held_out_per_class, HELD_OUT_SEED, SPEC, render_shape)
    log.info("data: %d train, %d held out, %.0f s", len(y), len(yh), time.time() - start)
    net = make_net()
    train(net, x, y, args.epochs, args.seed)
    float_model = export(net)
    check_export(net, float_model, xh[:16])
    acc = tflite_accuracy(float_model, xh, yh)
    log.info("float .tflite held-out accuracy %.4f", acc)
    desc = "Coloured shapes (circle, square, triangle, star, cross, ring) on random backgrounds."
    save_model(MODELS_DIR / "shapes", card_for("shapes", SPEC, acc, len(yh), desc), float_model)
    calibration = [x[i : i + 1] for i in range(0, len(x), len(x) // 200)]
    int8_model = quantize_int8(float_model, calibration)
    acc8 = tflite_accuracy(int8_model, xh, yh)
    log.info("int8 .tflite held-out accuracy %.4f", acc8)
    qin = Runner(int8_model).inputs[0]
    spec8 = SPEC.model_copy(
        update={
            "dtype": "int8",
            "quantization": InputQuantization(scale=qin.scale, zero_point=qin.zero_point),
        }
    )
    desc8 = desc + " Full-integer int8 (quantize_int8, 200 training images for calibration)."
    save_model(
        MODELS_DIR / "shapes_int8", card_for("shapes_int8", spec8, acc8, len(yh), desc8), int8_model
    )
    log.info("done in %.0f s", time.time() - start)
    return 0 if min(acc, acc8) >= 0.95 else 1


if __name__ == "__main__":
    raise SystemExit(main())
