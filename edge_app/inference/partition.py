"""Stages: which part of a model each device runs, and the stand-alone model of each part.

A stage is named by its input and output tensors (``StageSpec``); ``slice_stage`` turns it into a
stand-alone model carrying only the tensors, buffers and operator codes it uses, renumbered in
the original order, so that the result is a pure function of (model, stage): every device can cut
its own stage from the full model file and get the same bytes (``cut_stage``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_app.errors import PartitionError
from edge_app.inference.cutpoints import CutAnalysis, analyze_cuts
from edge_app.inference.graph import Model, Operator, Subgraph
from edge_app.inference.layers import (
    is_constant,
    op_name,
    producers,
    profile_model,
    resolve_layer,
    tensor_index,
)
from edge_app.inference.shard import (
    SHARDABLE_OPS,
    follower_chain,
    layer_weights,
    merge_shards,
    shard_bounds,
    shard_stage,
    weight_dequantizers,
)

__all__ = [
    "StageSpec",
    "cut_stage",
    "cut_stage_model",
    "default_stages",
    "merge_shards",
    "plan_stages",
    "shard_bounds",
    "slice_stage",
    "stage_model",
    "stage_operators",
]


BALANCE_SLACK = 0.01  # balanced splits may exceed the smallest largest stage by this fraction


@dataclass(frozen=True)
class StageSpec:
    index: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    shardable_layer: str | None = None


def stage_operators(model: Model, stage: StageSpec) -> list[int]:
    """The operators computing the stage's outputs from its inputs, in the model's order."""
    sub = model.main
    inputs = {tensor_index(sub, n) for n in stage.inputs}
    prod = producers(sub)
    selected: set[int] = set()
    stack: list[int] = []
    for name in stage.outputs:
        t = tensor_index(sub, name)
        if t not in inputs:
            if prod[t] < 0:
                raise PartitionError(f"stage {stage.index}: output {name!r} is not computed")
            stack.append(prod[t])
    while stack:
        i = stack.pop()
        if i in selected:
            continue
        selected.add(i)
        for t in sub.operators[i].inputs:
            if t < 0 or t in inputs:
                continue
            tensor = sub.tensors[t]
            if prod[t] >= 0:
                stack.append(prod[t])
            elif not (is_constant(model, tensor) or tensor.is_variable):
                raise PartitionError(
                    f"stage {stage.index} needs tensor {tensor.name!r}, which is not among its "
                    f"inputs {list(stage.inputs)} (not a valid cut)"
                )
    return sorted(selected)


def _check_no_control_flow(model: Model, ops: Iterable[int]) -> None:
    for i in ops:
        op = model.main.operators[i]
        if op.options and any("subgraph" in k.lower() for k in op.options.fields):
            raise PartitionError(
                f"operator {i} ({op_name(model, op)}) calls other subgraphs; "
                "models with control flow cannot be cut"
            )


def _renumbered(op: Operator, tmap: dict[int, int], omap: dict[int, int]) -> Operator:
    return Operator(
        opcode_index=omap[op.opcode_index],
        inputs=[tmap[t] if t >= 0 else -1 for t in op.inputs],
        outputs=[tmap[t] if t >= 0 else -1 for t in op.outputs],
        options=op.options,
        custom_options=op.custom_options,
    )


def slice_stage(model: Model, stage: StageSpec) -> Model:
    """A stand-alone model of the stage (only the tensors, buffers and opcodes it uses)."""
    sub = model.main
    ops = stage_operators(model, stage)
    _check_no_control_flow(model, ops)
    ins = [tensor_index(sub, n) for n in stage.inputs]
    outs = [tensor_index(sub, n) for n in stage.outputs]
    used = set(ins) | set(outs)
    for i in ops:
        used.update(t for t in (*sub.operators[i].inputs, *sub.operators[i].outputs) if t >= 0)
    tmap = {old: new for new, old in enumerate(sorted(used))}
    const_buffers = sorted(
        {sub.tensors[t].buffer for t in used if is_constant(model, sub.tensors[t])}
    )
    bmap = {old: new for new, old in enumerate(const_buffers, start=1)}
    opcodes = sorted({sub.operators[i].opcode_index for i in ops})
    omap = {old: new for new, old in enumerate(opcodes)}
    tensors = [
        dataclasses.replace(sub.tensors[t], buffer=bmap.get(sub.tensors[t].buffer, 0))
        for t in sorted(used)
    ]
    operators = [_renumbered(sub.operators[i], tmap, omap) for i in ops]
    new_sub = Subgraph(
        tensors=tensors,
        operators=operators,
        inputs=[tmap[t] for t in ins],
        outputs=[tmap[t] for t in outs],
        name=sub.name,
    )
    return Model(
        operator_codes=[model.operator_codes[i] for i in opcodes],
        subgraphs=[new_sub],
        buffers=[b"", *(model.buffers[b] for b in const_buffers)],
        description=model.description,
        version=model.version,
    )


def stage_model(
    model: Model,
    stage: StageSpec,
    shard: tuple[int, int] | None = None,
    bounds: Sequence[int] | None = None,
) -> Model:
    """The stand-alone Model of a stage, or of one shard of it (see ``cut_stage``)."""
    part = slice_stage(model, stage)
    if shard is not None:
        if stage.shardable_layer is None:
            raise PartitionError(f"stage {stage.index} has no layer that can be sharded")
        index, k = shard
        part = shard_stage(part, stage.shardable_layer, index, k, bounds)
    elif bounds is not None:
        raise PartitionError("shard bounds given without a shard")
    return part


def cut_stage_model(
    model: Model,
    stage: StageSpec,
    shard: tuple[int, int] | None = None,
    bounds: Sequence[int] | None = None,
) -> bytes:
    """``cut_stage`` on an already parsed model (saves re-parsing when cutting many stages)."""
    from edge_app.inference.graph_io import write_model

    return write_model(stage_model(model, stage, shard, bounds))


def cut_stage(
    model_bytes: bytes,
    stage: StageSpec,
    shard: tuple[int, int] | None = None,
    bounds: Sequence[int] | None = None,
) -> bytes:
    """The stage's stand-alone .tflite bytes; shard=(i, k) for the i-th of k slices of its layer.

    A pure function of its arguments: the same request gives byte-identical output everywhere.
    """
    from edge_app.inference.graph_io import read_model

    return cut_stage_model(read_model(model_bytes), stage, shard, bounds)


def _isolation(model: Model, cuts: CutAnalysis, op_index: int) -> tuple[int | None, int | None]:
    """Cut tensors (start, end) that put a layer and its element-wise followers in a stage of
    their own; None where the graph's input or output already bounds it."""
    sub = model.main
    op = sub.operators[op_index]
    name = sub.tensors[op.outputs[0]].name
    points = set(cuts.points)
    data = op.inputs[0]
    if data in points:
        start: int | None = data
    elif data in sub.inputs and len(sub.inputs) == 1 and cuts.segment[op_index] == 0:
        start = None
    else:
        raise PartitionError(
            f"layer {name!r} cannot be a stage of its own: its input "
            f"{sub.tensors[data].name!r} is not a cut point (inside a residual block or branch?)"
        )
    ends = [op_index, *follower_chain(model, op_index)]
    for i in reversed(ends):
        t = sub.operators[i].outputs[0]
        if t in points:
            return start, t
        if list(sub.outputs) == [t]:
            return start, None
    raise PartitionError(f"layer {name!r} cannot be a stage of its own: its output is not a cut")


def shardable_layer(model: Model, ops: Sequence[int]) -> str | None:
    """The layer's name when the operators are one shardable layer plus element-wise followers
    (and the DEQUANTIZE operators of its float16 weights, if any)."""
    sub = model.main
    layers = [i for i in ops if op_name(model, sub.operators[i]) in SHARDABLE_OPS]
    if len(layers) != 1:
        return None
    try:
        layer_weights(model, layers[0])
    except PartitionError:
        return None
    chain = follower_chain(model, layers[0])
    dequantizers = weight_dequantizers(model, layers[0])
    rest = [i for i in sorted(ops) if i != layers[0] and i not in dequantizers]
    if not set(dequantizers) <= set(ops) or rest != chain[: len(rest)]:
        return None
    return sub.tensors[sub.operators[layers[0]].outputs[0]].name


def stages_from_cuts(model: Model, cut_tensors: Sequence[int]) -> list[StageSpec]:
    """Stages between consecutive cut tensors (given in topological order)."""
    sub = model.main
    names = [sub.tensors[t].name for t in cut_tensors]
    first = tuple(sub.tensors[t].name for t in sub.inputs if not is_constant(model, sub.tensors[t]))
    last = tuple(sub.tensors[t].name for t in sub.outputs)
    bounds = [first, *((n,) for n in names), last]
    stages = []
    for j in range(len(bounds) - 1):
        spec = StageSpec(j, bounds[j], bounds[j + 1])
        layer = shardable_layer(model, stage_operators(model, spec))
        stages.append(dataclasses.replace(spec, shardable_layer=layer))
    return stages


def _ordered(cuts: CutAnalysis, tensors: Iterable[int | None]) -> list[int]:
    chosen = {t for t in tensors if t is not None}
    return [t for t in cuts.points if t in chosen]


def default_stages(model: Model) -> list[StageSpec]:
    """The Musical-Chair split: the convolution part, then every fully-connected layer (with its
    element-wise followers) as a shardable stage of its own, then the tail (softmax, ...)."""
    cuts = analyze_cuts(model)
    chosen: list[int | None] = []
    for i, op in enumerate(model.main.operators):
        if op_name(model, op) == "FULLY_CONNECTED":
            try:
                layer_weights(model, i)
                chosen.extend(_isolation(model, cuts, i))
            except PartitionError:
                continue
    return stages_from_cuts(model, _ordered(cuts, chosen))


def plan_stages(
    model: Model,
    n_stages: int | None = None,
    cuts: Sequence[str] | None = None,
    shard_layers: Iterable[str] = (),
) -> list[StageSpec]:
    """Stages from explicit cut tensors, or ``n_stages`` balanced by MACs, or the default split;
    every layer of ``shard_layers`` is put in a shardable stage of its own."""
    analysis = analyze_cuts(model)
    required: list[int | None] = []
    for ref in shard_layers:
        op_index = resolve_layer(model, ref)
        layer_weights(model, op_index)
        required.extend(_isolation(model, analysis, op_index))
    for name in cuts or ():
        t = tensor_index(model.main, name)
        if t not in analysis.points:
            valid = [model.main.tensors[p].name for p in analysis.points]
            raise PartitionError(f"{name!r} is not a valid cut point; valid: {valid}")
        required.append(t)
    fixed = _ordered(analysis, required)
    if cuts is not None and n_stages is not None and len(fixed) + 1 != n_stages:
        raise PartitionError(f"{len(fixed)} cuts make {len(fixed) + 1} stages, not {n_stages}")
    if cuts is None and n_stages is None:
        return _with_required(model, analysis, default_stages(model), fixed)
    if n_stages is not None:
        fixed = balanced_cuts(model, analysis, n_stages, fixed)
    return stages_from_cuts(model, fixed)


def _with_required(
    model: Model, analysis: CutAnalysis, stages: list[StageSpec], fixed: list[int]
) -> list[StageSpec]:
    sub = model.main
    have = [tensor_index(sub, s.outputs[0]) for s in stages[:-1]]
    return stages_from_cuts(model, _ordered(analysis, [*have, *fixed]))


def balanced_cuts(
    model: Model, analysis: CutAnalysis, n_stages: int, fixed: Sequence[int]
) -> list[int]:
    """``n_stages - 1`` cut tensors including ``fixed``, minimizing the largest stage cost
    (MACs plus one per operator), then the unevenness of the others; ties to the earliest."""
    points = list(analysis.points)
    m = len(points)
    if n_stages < 1:
        raise PartitionError(f"the number of stages must be at least 1, got {n_stages}")
    if n_stages - 1 > m:
        raise PartitionError(f"the model has {m} cut points, so at most {m + 1} stages")
    if len(fixed) > n_stages - 1:
        raise PartitionError(f"{n_stages} stages are too few: the shards need {len(fixed) + 1}")
    seg_cost = [0] * (m + 1)
    for info in profile_model(model):
        seg_cost[analysis.segment[info.index]] += info.macs + 1
    prefix = [0]
    for c in seg_cost:
        prefix.append(prefix[-1] + c)
    pos_fixed = sorted(points.index(t) for t in fixed)
    # The smallest possible largest stage; then, among splits within 1% of it, the most even one
    # (least sum of squares), so that no stage is left nearly empty when it can be avoided.
    worst, _ = _dp_cuts(prefix, m, n_stages - 1, pos_fixed, squares=False, limit=float("inf"))
    limit = worst * (1 + BALANCE_SLACK)
    _, chosen = _dp_cuts(prefix, m, n_stages - 1, pos_fixed, squares=True, limit=limit)
    return [points[j] for j in chosen]


def _dp_cuts(
    prefix: list[int], m: int, n_cuts: int, fixed: list[int], *, squares: bool, limit: float
) -> tuple[float, list[int]]:
    """Choose ``n_cuts`` of positions 0..m-1 (including ``fixed``) minimizing the largest stage
    cost, or with ``squares`` the sum of squared stage costs; stages costing more than ``limit``
    are not allowed. Returns (the optimum, the cut positions); ties go to the earliest cuts.

    A stage from cut a (exclusive) to cut b covers segments a+1..b: cost prefix[b+1]-prefix[a+1].
    """

    def free(a: int, b: int) -> bool:  # no fixed cut strictly between a and b
        return not any(a < f < b for f in fixed)

    def step(acc: float, a: int, b: int) -> float:
        c = prefix[b + 1] - prefix[a + 1]
        if c > limit:
            return inf
        return acc + c * c if squares else max(acc, c)

    inf = float("inf")
    best: list[dict[int, tuple[float, int]]] = [{-1: (0, -1)}]
    for _ in range(n_cuts):
        layer: dict[int, tuple[float, int]] = {}
        for b in range(m):
            for a, (acc, _prev) in best[-1].items():
                if a < b and free(a, b):
                    value = step(acc, a, b)
                    if value < layer.get(b, (inf, 0))[0]:
                        layer[b] = (value, a)
        best.append(layer)
    final = [(step(acc, a, m), a) for a, (acc, _p) in best[-1].items() if free(a, m)]
    if not final or min(final)[0] == inf:
        raise PartitionError("no split satisfies the requested cuts and stage count")
    value, end = min(final)
    chosen = []
    for level in range(n_cuts, 0, -1):
        chosen.append(end)
        end = best[level][end][1]
    return value, sorted(chosen)
