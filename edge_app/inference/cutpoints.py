"""Single-tensor cuts of a model's graph.

A tensor ``t`` is a cut point when the operators split into A = the ancestors of ``t`` (its
producer and everything it depends on) and B = all the others, such that ``t`` is the only tensor
that crosses from A to B: no other tensor made in A is read in B or is a graph output, and every
graph input is read only in A. Residual blocks and branches therefore stay whole (their inner
tensors are never cut points), and graphs with several inputs or outputs work unchanged.

The test does not depend on the order of the operators in the file: A is computed as an ancestor
set (bitsets over operator indices), not as a prefix of the operator list.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from edge_app.inference.graph import Model, Operator
from edge_app.inference.layers import consumers, is_constant, producers


@dataclass(frozen=True)
class CutAnalysis:
    """Cut points (tensor indices, topological order) and each operator's segment.

    ``segment[op]`` is the position of the first cut point that the operator lies before (is an
    ancestor of), or ``len(points)`` for operators after the last cut.
    """

    points: tuple[int, ...]
    segment: tuple[int, ...]
    ancestors: tuple[int, ...]  # per operator: bitset of its ancestor operators (itself included)


def ancestor_sets(model: Model) -> list[int]:
    """Per operator, the bitset of operators it depends on (itself included)."""
    sub = model.main
    prod = producers(sub)
    anc = [0] * len(sub.operators)
    order = _topological_order(model)
    for i in order:
        mask = 1 << i
        for t in sub.operators[i].inputs:
            if t >= 0 and prod[t] >= 0:
                mask |= anc[prod[t]]
        anc[i] = mask
    return anc


def _topological_order(model: Model) -> list[int]:
    """Operators in an order where producers come first (the file's order when it is valid)."""
    sub = model.main
    prod = producers(sub)
    done: set[int] = set()
    order: list[int] = []
    for start in range(len(sub.operators)):
        stack = [(start, False)]
        while stack:
            i, expanded = stack.pop()
            if i in done:
                continue
            if expanded:
                done.add(i)
                order.append(i)
                continue
            stack.append((i, True))
            for t in reversed(sub.operators[i].inputs):
                p = prod[t] if t >= 0 else -1
                if p >= 0 and p not in done and p != i:
                    stack.append((p, False))
    return order


def _crossing_masks(model: Model) -> tuple[list[int], int]:
    """Per tensor the bitset of its readers; and the bitset of readers of graph inputs."""
    sub = model.main
    cons = consumers(sub)
    reader_masks = [0] * len(sub.tensors)
    for t, ops in enumerate(cons):
        for o in ops:
            reader_masks[t] |= 1 << o
    input_readers = 0
    for t in sub.inputs:
        if not is_constant(model, sub.tensors[t]):
            input_readers |= reader_masks[t]
    return reader_masks, input_readers


def analyze_cuts(model: Model) -> CutAnalysis:
    sub = model.main
    n_ops = len(sub.operators)
    everything = (1 << n_ops) - 1
    prod = producers(sub)
    anc = ancestor_sets(model)
    readers, input_readers = _crossing_masks(model)
    graph_outputs = set(sub.outputs)
    name_counts = Counter(t.name for t in sub.tensors)
    points: list[int] = []
    for t in sorted(range(len(sub.tensors)), key=lambda x: (prod[x], x)):
        p = prod[t]
        if p < 0 or t in graph_outputs or is_constant(model, sub.tensors[t]):
            continue
        if name_counts[sub.tensors[t].name] != 1:
            continue  # a stage names its inputs: an ambiguous name cannot be a cut
        a = anc[p]
        rest = everything & ~a
        if rest == 0 or not readers[t] & rest or input_readers & rest:
            continue
        if _only_crossing(sub.operators, a, t, readers=readers, graph_outputs=graph_outputs):
            points.append(t)
    points.sort(key=lambda x: (bin(anc[prod[x]]).count("1"), prod[x]))
    segment = []
    for i in range(n_ops):
        seg = next((k for k, pt in enumerate(points) if anc[prod[pt]] >> i & 1), len(points))
        segment.append(seg)
    return CutAnalysis(tuple(points), tuple(segment), tuple(anc))


def _only_crossing(
    ops: list[Operator], a: int, t: int, *, readers: list[int], graph_outputs: set[int]
) -> bool:
    """True when ``t`` is the only tensor made by operators in ``a`` that is needed outside."""
    rest = ~a
    for i, op in enumerate(ops):
        if a >> i & 1:
            for u in op.outputs:
                if u >= 0 and u != t and (readers[u] & rest or u in graph_outputs):
                    return False
    return True


def cut_points(model: Model) -> list[str]:
    """Names of the tensors where the model can be cut in two, in topological order."""
    sub = model.main
    return [sub.tensors[t].name for t in analyze_cuts(model).points]
