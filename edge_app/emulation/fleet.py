"""An emulated fleet in one process: the real scheduler, real workers (each padded to a device
profile and paced to its link), a job publisher on an emulated sensor link and an outcome sink,
all on one in-memory bus (or a real broker). Used by ``edge-app bench paper`` and the tests.

The load is a closed loop: the sensor keeps ``in_flight`` jobs in flight (as the simulator's
default, 2 x devices + 2). Throughput and latency are measured on ``jobs`` results after
``warmup`` results, while the sensor goes on publishing (no drain inflating the rate).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_app.config import FleetConfig
from edge_app.emulation.emulator import Emulator, PacedTransport
from edge_app.emulation.profiles import load_profiles
from edge_app.emulation.surrogate import timing_profile
from edge_app.emulation.workload import Workload
from edge_app.errors import ConfigError
from edge_app.messages.schemas import JobOutcome, Plan, encode
from edge_app.pipeline.courier import Courier
from edge_app.pipeline.jobs import JobPublisher, PublisherOptions
from edge_app.roles.scheduler import Scheduler, SchedulerOptions
from edge_app.roles.sink import OutcomeSink
from edge_app.roles.worker import Worker, WorkerOptions
from edge_app.scheduling.planner import PlanPolicy
from edge_app.simulation.fleet import SimDevice
from edge_app.simulation.stats import completion_rate, percentile
from edge_app.transport.base import Transport
from edge_app.transport.memory import MemoryBus

log = logging.getLogger(__name__)


@dataclass
class EmulatedRun:
    throughput: float  # results/s of wall time
    latency_p50: float  # wall seconds
    latency_p90: float
    latency_mean: float
    results: int
    dropped: int
    overruns: int
    jobs_padded: int
    plan: Plan
    epochs: tuple[int, int]  # plan epoch at the start and at the end of the measurement
    wall_s: float
    resent: int = 0  # re-sends by the couriers (ack timeouts) since the fleet started
    utilization: dict[str, float] = field(default_factory=dict)  # emulated busy fraction
    power_w: float = 0.0  # the fleet's modeled power at that utilization
    energy_j: float = 0.0  # per inference, in device time (power x 1 / device-time rate)
    latencies: list[float] = field(default_factory=list)


@dataclass
class FleetSpec:
    devices: list[SimDevice]
    model_path: Path  # what the workers really run
    real: Workload  # its workload
    timing: Workload  # what they emulate (the same, or the full model behind a surrogate)
    time_scale: float = 1.0
    sensor_link: str = "wifi-n"
    in_flight: int | None = None
    window: int = 4
    policy: PlanPolicy = field(default_factory=PlanPolicy)
    # Re-plan on fleet changes only: at a large time scale the host's per-job noise (10-20 ms)
    # is a large part of a short emulated stage and would skew measured-time re-plans.
    refresh_s: float = 1e6
    fixed_plan: Plan | None = None  # publish this plan instead of running the scheduler
    # The couriers' adaptive ack timeout (floor 2 s) fires spuriously when acks wait for whole
    # Pi-speed fan-out steps: False raises its floor to the run's patience (no re-sends).
    adaptive_acks: bool = False


Connect = Callable[[str], Transport]


class EmulatedFleet:
    """``connect(client_id)`` gives each role its transport: by default clients of one
    in-memory bus; pass e.g. ``lambda cid: MqttTransport(broker, cid)`` for a real broker."""

    def __init__(
        self, spec: FleetSpec, connect: Connect | None = None, fleet: str = "emulated"
    ) -> None:
        self.spec = spec
        self.bus: MemoryBus | None = None
        if connect is None:
            bus = self.bus = MemoryBus(synchronous=False)
            connect = bus.connect
        self.connect = connect
        per_job = spec.timing.seconds(min(spec.devices, key=_slowness).profile) / spec.time_scale
        self.patience = max(30.0, 4 * (spec.in_flight or 2 * len(spec.devices) + 2) * per_job)
        self.config = FleetConfig(fleet=fleet, heartbeat_s=1.0, deadline_s=3600.0)
        self.workers: list[Worker] = []
        self.emulators: list[Emulator] = []
        self.scheduler: Scheduler | None = None
        self.publisher: JobPublisher | None = None
        self.sink: OutcomeSink | None = None
        self._cond = threading.Condition()
        self._done: list[JobOutcome] = []
        self._stop = threading.Event()
        self._feeder: threading.Thread | None = None
        self._fixed: Plan | None = None
        self._extra: list[Transport] = []  # the sensor's and the fixed plan's transports

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        spec = self.spec
        data = spec.model_path.read_bytes()
        profile = (
            spec.real.profile
            if spec.timing is spec.real
            else timing_profile(spec.real, spec.timing, data)
        )
        surrogate = spec.timing is not spec.real
        for d in spec.devices:
            emu = Emulator(
                d.profile, spec.timing, time_scale=spec.time_scale, reference_s=profile.reference_s
            )
            transport = emu.wrap(self.connect(d.id), self.config.topics, bytes_of=surrogate)
            options = WorkerOptions(
                emulate=d.profile.name,
                speed=emu.speed,
                hardware=emu.hardware,
                window=spec.window,
                ack_timeout_s=self.patience,
                merge_timeout_s=self.patience,
            )
            worker = Worker(
                self.config,
                d.id,
                spec.model_path,
                transport=transport,
                options=options,
                compute_hook=emu.hook,
                model_name=spec.real.name,
            )
            emu.bind(d.id, worker.current_plan)
            self._ack_floor(worker.courier)
            worker.start()
            self.workers.append(worker)
            self.emulators.append(emu)
        if spec.fixed_plan is not None:
            self._fixed = spec.fixed_plan.model_copy(update={"epoch": 1, "ts": time.time()})
            pub = self.connect("planner")
            self._extra.append(pub)
            pub.start()
            pub.publish(self.config.topics.plan, encode(self._fixed), retain=True)
            self._start_sensor()
            return
        self.scheduler = Scheduler(
            self.config,
            profile,
            transport=self.connect("scheduler"),
            options=SchedulerOptions(policy=spec.policy, refresh_s=spec.refresh_s),
        )
        self.scheduler.start()
        self._start_sensor()

    def _start_sensor(self) -> None:
        spec = self.spec
        links = load_profiles().links
        if spec.sensor_link not in links:
            raise ConfigError(f"unknown link {spec.sensor_link!r}")
        rate = links[spec.sensor_link].bytes_per_s * spec.time_scale
        sensor_t: Transport = PacedTransport(
            self.connect("sensor"),
            self.config.topics,
            rate,
            spec.timing if spec.timing is not spec.real else None,
        )
        limit = spec.in_flight or 2 * len(spec.devices) + 2
        self.publisher = JobPublisher(
            sensor_t,
            self.config,
            "sensor",
            model_name=spec.real.name,
            options=PublisherOptions(
                max_in_flight=limit, window=spec.window, ack_timeout_s=self.patience
            ),
        )
        self._ack_floor(self.publisher.courier)
        self.publisher.attach()
        self._extra.append(sensor_t)
        sensor_t.start()
        self.publisher.start()
        self.sink = OutcomeSink(self.connect("sink"), self.config.topics, on_outcome=self._got)
        self.sink.transport.start()
        self.sink.attach()

    def _ack_floor(self, courier: Courier) -> None:
        if not self.spec.adaptive_acks:
            courier.config = dataclasses.replace(courier.config, min_ack_timeout_s=self.patience)

    def _got(self, outcome: JobOutcome) -> None:
        with self._cond:
            self._done.append(outcome)
            self._cond.notify_all()

    def current_plan(self) -> Plan | None:
        return self._fixed or (self.scheduler.current_plan() if self.scheduler else None)

    def wait_seated(self, timeout: float = 30.0) -> Plan:
        """Wait until the plan seats every device."""
        end = time.monotonic() + timeout
        want = {d.id for d in self.spec.devices}
        while time.monotonic() < end:
            plan = self.current_plan()
            if plan is not None and _seated(plan) >= want:
                return plan
            time.sleep(0.1)
        raise ConfigError(f"the scheduler did not seat all {len(want)} devices in {timeout} s")

    def _feed(self, x: np.ndarray) -> None:
        assert self.publisher is not None
        while not self._stop.is_set():
            if self.publisher.in_flight < self.publisher.options.max_in_flight:
                self.publisher.submit(x)
            else:
                time.sleep(0.003)

    def measure(self, jobs: int, warmup: int) -> EmulatedRun:
        """Keep the sensor busy; measure ``jobs`` results after ``warmup`` results."""
        assert self.publisher is not None
        plan = self.wait_seated()
        shape = self._input_shape()
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        started = time.monotonic()
        self._feeder = threading.Thread(target=self._feed, args=(x,), daemon=True)
        self._feeder.start()
        self._wait_results(warmup + 1)
        busy0, mono0 = [e.busy_s for e in self.emulators], time.monotonic()
        epoch0 = self.current_plan() or plan
        last = self._wait_results(warmup + jobs)
        span = max(1e-9, time.monotonic() - mono0)
        util = {
            d.id: min(1.0, (e.busy_s - b0) / span)
            for d, e, b0 in zip(self.spec.devices, self.emulators, busy0, strict=True)
        }
        power = sum(
            d.profile.power_idle_w + (d.profile.power_full_w - d.profile.power_idle_w) * util[d.id]
            for d in self.spec.devices
        )
        window = last[warmup:]
        ok = [o for o in window if o.status == "ok"]
        lat = sorted(o.latency_s for o in ok)
        final = self.current_plan() or plan
        rate = completion_rate([o.done_ts for o in ok])
        resent = sum(w.accounting.resent for w in self.workers)
        return EmulatedRun(
            throughput=rate,
            resent=resent + self.publisher.accounting.resent,
            utilization=util,
            power_w=power,
            energy_j=power / (rate / self.spec.time_scale) if rate > 0 else float("inf"),
            latency_p50=percentile(lat, 50),
            latency_p90=percentile(lat, 90),
            latency_mean=sum(lat) / len(lat) if lat else 0.0,
            results=len(ok),
            dropped=len(window) - len(ok),
            overruns=sum(e.overruns for e in self.emulators),
            jobs_padded=sum(e.jobs for e in self.emulators),
            plan=final,
            epochs=(epoch0.epoch, final.epoch),
            wall_s=time.monotonic() - started,
            latencies=lat,
        )

    def _input_shape(self) -> tuple[int, ...]:
        from edge_app.inference.graph_io import read_model
        from edge_app.inference.layers import tensor_index

        model = read_model(self.spec.model_path.read_bytes())
        name = self.spec.real.profile.stages[0].stage.inputs[0]
        shape = model.main.tensors[tensor_index(model.main, name)].shape
        return tuple(max(1, int(d)) for d in shape)

    def _wait_results(self, n: int) -> list[JobOutcome]:
        end = time.monotonic() + self.patience * max(1.0, n / max(1, len(self.spec.devices)))
        with self._cond:
            while len(self._done) < n:
                left = end - time.monotonic()
                if left <= 0:
                    raise ConfigError(f"emulated fleet: only {len(self._done)} of {n} results")
                self._cond.wait(min(left, 0.5))
            return sorted(self._done, key=lambda o: o.done_ts)[:n]

    def stop(self) -> None:
        self._stop.set()
        if self._feeder is not None:
            self._feeder.join(timeout=5.0)
        if self.publisher is not None:
            self.publisher.stop(drain_s=0.0)
        for w in self.workers:
            w.options = dataclasses.replace(w.options, drain_s=0.0)  # queued jobs: not waited
            w.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.sink is not None:
            self.sink.detach()
            self.sink.transport.stop()
        for t in self._extra:
            t.stop()
        if self.bus is not None:
            self.bus.close()


def _slowness(d: SimDevice) -> float:
    return 1.0 / d.profile.conv_macs_per_s


def _seated(plan: Plan) -> set[str]:
    out: set[str] = set()
    for sp in plan.stages:
        out |= {r.device for r in sp.replicas} | {s.device for s in sp.shards}
    return out
