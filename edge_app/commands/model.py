"""`edge-app model inspect | split | verify | build`: the model toolkit on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_app.errors import ConfigError, ModelError
from edge_app.inference.graph import Model, Subgraph
from edge_app.inference.layers import LayerInfo, profile_model


def _shard_arg(text: str) -> tuple[str, int]:
    layer, sep, k = text.rpartition("=")
    if not sep or not layer or not k.isdigit() or int(k) < 1:
        raise argparse.ArgumentTypeError(f"expected LAYER=K with K >= 1, got {text!r}")
    return layer, int(k)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("model", help="inspect, split, verify and build TFLite models")
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    p = sub.add_parser("inspect", help="table of layers (MACs, parameters, bytes) and cut points")
    p.add_argument("model", help="a .tflite file")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("split", help="cut a model into stage files and DIR/manifest.json")
    p.add_argument("model", help="a .tflite file")
    p.add_argument("--stages", type=int, help="number of stages (balanced by MACs)")
    p.add_argument("--cut", action="append", metavar="TENSOR", help="cut at this tensor")
    p.add_argument(
        "--shard",
        action="append",
        type=_shard_arg,
        default=[],
        metavar="LAYER=K",
        help="split layer LAYER (FC or conv, by output tensor name) into K shards",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory (must not exist)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("verify", help="check that a split composes to the whole model's output")
    p.add_argument("model", help="the .tflite file that was split")
    p.add_argument("dir", type=Path, help="the split directory (with manifest.json)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeded random inputs")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "build", help="build a zoo model (alexnet, vgg16, c3d, ...) from seeded weights"
    )
    p.add_argument("name")
    p.add_argument("--small", action="store_true", help="the tiny variant (same topology)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="output .tflite file (must not exist)")
    p.set_defaults(func=cmd_build)


def _model_bytes(ref: str) -> tuple[Path, bytes]:
    """A model file's path and bytes (a name known to the catalog works too, once it exists)."""
    from edge_app.inference.catalog import resolve_model

    path = Path(ref)
    if not path.exists():
        path = resolve_model(ref)[1]
    try:
        return path, path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror or exc}") from exc


def _read(ref: str) -> tuple[Path, bytes, Model]:
    from edge_app.inference.graph_io import read_model

    path, data = _model_bytes(ref)
    return path, data, read_model(data)


def _human(n: float) -> str:
    """3 significant digits with a K/M/G/T suffix: 1234567 -> 1.23M."""
    for unit in ("", "K", "M", "G"):
        if abs(n) < 999.5:
            return f"{n:.3g}{unit}" if unit else f"{int(n)}"
        n /= 1000
    return f"{n:.3g}T"


_HEADS = ("MACs", "params", "bytes", "act")


def _layer_row(info: LayerInfo) -> str:
    shape = "x".join(str(d) for d in info.output_shape)
    name = info.outputs[0] if info.outputs else ""
    return (
        f"{info.index:>4} {info.op:<20} {shape:<18} {_human(info.macs):>8} {_human(info.params):>8}"
        f" {_human(info.weight_bytes):>8} {_human(info.activation_bytes):>8}  {name}"
    )


def _tensor_list(sub: Subgraph, indices: list[int]) -> str:
    return "; ".join(f"{t.name} {t.shape} {t.dtype}" for t in (sub.tensors[i] for i in indices))


def cmd_inspect(args: argparse.Namespace) -> int:
    from edge_app.inference.cutpoints import cut_points

    path, data, model = _read(args.model)
    sub = model.main
    infos = profile_model(model)
    print(f"{path}: {len(data)} bytes, {len(infos)} operators")
    print(f"inputs:  {_tensor_list(sub, sub.inputs)}\noutputs: {_tensor_list(sub, sub.outputs)}")
    print(f"{'#':>4} {'op':<20} {'output':<18}" + "".join(f" {h:>8}" for h in _HEADS) + "  name")
    for info in infos:
        print(_layer_row(info))
    print(
        f"total: {_human(sum(i.macs for i in infos))} MACs, "
        f"{_human(sum(i.params for i in infos))} parameters, "
        f"{_human(sum(i.weight_bytes for i in infos))} weight bytes"
    )
    points = cut_points(model)
    print(f"cut points ({len(points)}): {', '.join(points) if points else '(none)'}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from edge_app.inference.manifest import write_split
    from edge_app.inference.partition import plan_stages

    if args.out.exists():
        raise ConfigError(f"output directory {args.out} already exists")
    shards = dict(args.shard)
    if len(shards) != len(args.shard):
        raise ConfigError("a layer is given twice with --shard")
    path, data, model = _read(args.model)
    stages = plan_stages(model, n_stages=args.stages, cuts=args.cut, shard_layers=list(shards))
    del data, model  # write_split reads the file again; do not hold it twice
    manifest = write_split(path, args.out, stages, shards)
    for entry in manifest.stages:
        files = ", ".join(f.file for f in entry.files)
        ins = ",".join(t.name for t in entry.inputs)
        outs = ",".join(t.name for t in entry.outputs)
        print(f"stage {entry.index}: {ins} -> {outs}  {_human(entry.macs)} MACs  [{files}]")
    print(f"wrote {len(manifest.stages)} stages to {args.out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from edge_app.inference.verify import verify_split

    _path, data = _model_bytes(args.model)
    result = verify_split(data, args.dir, seeds=args.seeds, threads=args.threads)
    print(
        f"largest difference {result.max_abs_diff:.3g} "
        f"(tolerance {result.tolerance:.3g}, output scale {result.scale:.3g}): "
        f"{'ok' if result.ok else 'MISMATCH'}"
    )
    return 0 if result.ok else 1


def cmd_build(args: argparse.Namespace) -> int:
    from edge_app.inference import zoo

    out: Path = args.out
    if out.exists():
        raise ConfigError(f"{out} already exists")
    data = zoo.build(args.name, small=args.small, seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    zoo.write_model_file(out, data)
    print(f"wrote {out} ({len(data)} bytes)")
    return 0
