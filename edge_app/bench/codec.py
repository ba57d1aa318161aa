"""`edge-app bench codec`: the per-hop cost of the data plane (part of the pipeline benchmark).

For activations of 10 KB, 100 KB, 1 MB and 10 MB (float32, with a realistic header: job id,
a 3-entry trace, a shard layout), on Mosquitto and on the embedded amqtt broker side by side:

- **encode + decode** time of one envelope (``codec.encode_envelope`` + ``decode_envelope``;
  the decode is zero-copy, so this is essentially one memcpy), median of ``--repeats``;
- **transit**: from ``publish()`` on one MqttTransport to the handler call on another (QoS 1,
  loopback, one message in flight at a time, same clock), median of ``--repeats``;
- **codec / transit** (target <= 10 %) and **wire / raw** bytes (target <= 1.01).

A private Mosquitto (``/usr/sbin/mosquitto`` on a free port, temp config) and a private embedded
broker (``python -m edge_app.roles.embedded_broker``) are started and stopped by the benchmark;
``--broker URL`` measures an existing broker instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.config import BrokerConfig
from edge_app.errors import ConfigError, TransportError
from edge_app.messages.codec import Envelope, Header, decode_envelope, encode_envelope
from edge_app.messages.topics import Topics
from edge_app.roles.supervisor import free_port, wait_port

BENCH_TOPICS = Topics.for_fleet("bench")  # the private broker's topics

SIZES = {"10K": 10 * 1024, "100K": 100 * 1024, "1M": 1024 * 1024, "10M": 10 * 1024 * 1024}


@dataclass(frozen=True)
class HopResult:
    broker: str
    size: str
    raw_bytes: int
    wire_bytes: int  # deep in the pipeline (trace of 3 stages, shard layout)
    first_hop_wire_bytes: int  # a sensor's job for stage 0
    encode_ms: float
    decode_ms: float
    transit_ms: float
    samples: int

    @property
    def codec_ms(self) -> float:
        return self.encode_ms + self.decode_ms

    @property
    def codec_share(self) -> float:
        return self.codec_ms / self.transit_ms if self.transit_ms > 0 else float("inf")

    @property
    def wire_ratio(self) -> float:
        return self.wire_bytes / self.raw_bytes

    @property
    def first_hop_ratio(self) -> float:
        return self.first_hop_wire_bytes / self.raw_bytes

    @property
    def codec_gbps(self) -> float:
        """Raw tensor bytes through encode + decode per second."""
        return self.raw_bytes / (self.codec_ms / 1e3) / 1e9 if self.codec_ms else float("inf")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "codec", help="per-hop cost: encode+decode vs broker transit, wire bytes vs raw"
    )
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated of 10K,100K,1M,10M")
    p.add_argument("--brokers", default="mosquitto,amqtt", help="mosquitto, amqtt or both")
    p.add_argument("--broker", default=None, metavar="URL", help="measure this broker instead")
    p.add_argument("--repeats", type=int, default=30, help="timed messages per size (30)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_codec)


def sample_envelope(nbytes: int, deep: bool = True) -> Envelope:
    """An activation as it travels: ``deep`` = a fan-out after 3 stages on 3 devices (trace,
    shard layout, merger), else a sensor's first hop to stage 0."""
    now = time.time()
    data = np.random.default_rng(0).standard_normal(nbytes // 4).astype(np.float32)
    first = Header(
        job="camera-1-000042-9f3a1c2e",
        sensor="camera-1",
        seq=42,
        created=now,
        deadline=now + 5.0,
        epoch=7,
        stage=0,
        attempt=0,
        sender="camera-1",
    )
    if not deep:
        return Envelope(first, (("image", data),))
    trace = tuple((s, None, f"worker-{s}", 0.0012, 0.0345, 0.0021) for s in range(3))
    header = replace(
        first, stage=3, sender="worker-2", layout=(0, 2048, 4096), merge_to="worker-3", trace=trace
    )
    return Envelope(header, (("fc6", data),))


def time_codec(env: Envelope, repeats: int) -> tuple[float, float, int]:
    """Median encode and decode seconds, and the wire size."""
    enc, dec = [], []
    payload = encode_envelope(env)
    for _ in range(repeats):
        t0 = time.perf_counter()
        payload = encode_envelope(env)
        t1 = time.perf_counter()
        decode_envelope(payload)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    return statistics.median(enc), statistics.median(dec), len(payload)


def time_transit(broker: BrokerConfig, payload: bytes, repeats: int) -> list[float]:
    """One-way publish-to-handler seconds for ``repeats`` messages sent one at a time."""
    from edge_app.transport.base import Received
    from edge_app.transport.mqtt import MqttTransport

    got = threading.Event()
    arrived = [0.0]

    def handler(_: Received) -> None:
        arrived[0] = time.perf_counter()
        got.set()

    tag = f"{time.monotonic_ns() % 10**9}"
    topic = BENCH_TOPICS.task(f"hop-{tag}")
    receiver = MqttTransport(broker, f"bench-rx-{tag}")
    sender = MqttTransport(broker, f"bench-tx-{tag}")
    receiver.subscribe(topic, handler)
    receiver.start()
    sender.start()
    times = []
    try:
        for i in range(repeats + 2):  # two warm-up messages
            got.clear()
            start = time.perf_counter()
            sender.publish(topic, payload, qos=1)
            if not got.wait(60):
                raise TransportError(f"message {i} of {len(payload)} bytes never arrived")
            if i >= 2:
                times.append(arrived[0] - start)
    finally:
        sender.stop()
        receiver.stop()
    return times


@contextmanager
def private_broker(kind: str) -> Iterator[BrokerConfig]:
    """A Mosquitto or embedded amqtt broker on a free port for the benchmark's lifetime."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "mosquitto":
            binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            if not Path(binary).exists():
                raise ConfigError("mosquitto is not installed")
            conf = Path(tmp) / "mosquitto.conf"
            import getpass

            conf.write_text(
                f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
                "set_tcp_nodelay true\n"
            )
            argv = [binary, "-c", str(conf)]
        elif kind == "amqtt":
            argv = [sys.executable, "-m", "edge_app.roles.embedded_broker", "--port", str(port)]
        else:
            raise ConfigError(f"unknown broker kind {kind!r}: mosquitto or amqtt")
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not wait_port(proc, "127.0.0.1", port, timeout=15.0):
                exited = proc.poll()
                raise TransportError(
                    f"broker did not listen on {port}"
                    + ("" if exited is None else f": its process exited with {exited}")
                )
            yield BrokerConfig(url=f"mqtt://127.0.0.1:{port}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def measure(broker: BrokerConfig, name: str, sizes: list[str], repeats: int) -> list[HopResult]:
    results = []
    for size in sizes:
        env = sample_envelope(SIZES[size])
        # big messages on a slow broker: fewer samples, same median estimator
        n = max(5, repeats // 3) if SIZES[size] >= 10 * 1024 * 1024 else repeats
        enc, dec, wire = time_codec(env, n)
        transit = time_transit(broker, encode_envelope(env), n)
        results.append(
            HopResult(
                broker=name,
                size=size,
                raw_bytes=env.tensor_bytes,
                wire_bytes=wire,
                first_hop_wire_bytes=len(encode_envelope(sample_envelope(SIZES[size], False))),
                encode_ms=enc * 1e3,
                decode_ms=dec * 1e3,
                transit_ms=statistics.median(transit) * 1e3,
                samples=n,
            )
        )
    return results


def run_codec_bench(
    sizes: list[str], brokers: list[str], repeats: int, url: str | None = None
) -> list[HopResult]:
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or repeats < 1:
        raise ConfigError(f"sizes must be among {list(SIZES)} and repeats >= 1")
    if url is not None:
        return measure(BrokerConfig(url=url), url, sizes, repeats)
    results: list[HopResult] = []
    for kind in brokers:
        with private_broker(kind) as broker:
            results += measure(broker, kind, sizes, repeats)
    return results


def cmd_codec(args: argparse.Namespace) -> int:
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    results = run_codec_bench(sizes, brokers, args.repeats, args.broker)
    if args.json:
        docs: list[dict[str, Any]] = [
            {
                **asdict(r),
                "codec_share": r.codec_share,
                "wire_ratio": r.wire_ratio,
                "first_hop_ratio": r.first_hop_ratio,
            }
            for r in results
        ]
        print(json.dumps(docs, indent=1))
        return 0
    head = (
        "| broker | size | encode ms | decode ms | codec GB/s | transit ms | codec/transit "
        "| wire/raw (stage 0) | wire/raw (deep) | n |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in results:
        lines.append(
            f"| {r.broker} | {r.size} | {r.encode_ms:.3f} | {r.decode_ms:.3f} | "
            f"{r.codec_gbps:.1f} | {r.transit_ms:.2f} | {100 * r.codec_share:.1f} % | "
            f"{r.first_hop_ratio:.4f} | {r.wire_ratio:.4f} | {r.samples} |"
        )
    print("\n".join(lines))
    return 0
