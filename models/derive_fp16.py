"""Derive the float model for CUDA from the shipped int8 artifact, so only the int8 file is committed.

    python models/derive_fp16.py                        # -> models/emotion/model.fp16.onnx
    python models/derive_fp16.py --precision fp32 --out /tmp/model.deq.onnx

Every int8 weight is dequantized (w = (q - zero_point) * scale) and the integer ops that
`onnxruntime.quantization.quantize_dynamic` introduced are replaced by their float originals:
DynamicQuantizeLinear + MatMulInteger + Cast + Mul -> MatMul, QAttention -> Attention, and
Gather + DequantizeLinear -> Gather. Then onnxruntime's BERT fusions run (SkipLayerNorm, BiasGelu; Attention
only with --fuse-attention, see below) and, for fp16, weights and activations become float16 while the graph's
inputs and outputs keep their types (int64 in, float32 out), so the worker feeds both variants the same way.
The result carries the int8 rounding of the weights but computes in float: on dev it matches int8 closely.
Needs: onnx, onnxruntime (both in models/train/requirements.txt).

Attention is left unfused by default. On an H200 (onnxruntime-gpu 1.31.1, README › Benchmarks › GPU) the graph
with the fused Attention op (what onnxruntime 1.31's optimizer makes of emotion-me5s-l6-v2; 1.30's fuses none)
was faster on fixed-length batches (64 tokens 145k vs 117k msg/s) but fell to 2.2k msg/s on the realistic length
mix, and the process crashed (SIGSEGV) at exit in about half of short runs. The unfused graph had neither problem.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ARTIFACT_DIR = Path(__file__).resolve().parent / "emotion"


class Graph:
    """Index of a GraphProto: producers, consumers and initializers by name."""

    def __init__(self, graph: onnx.GraphProto):
        self.g = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.inits[name])

    def dequantize(self, q: str, scale: str, zero_point: str, new_name: str) -> str:
        """Adds a float initializer (q - zp) * scale; per-column scales broadcast over the last axis."""
        scale_arr, zp = self.array(scale), self.array(zero_point).astype(np.float32)
        # quantize_dynamic writes per-tensor scalars, or per-output-column vectors for MatMul weights [K, N].
        assert scale_arr.ndim == 0 or scale_arr.shape == (self.array(q).shape[-1],), (q, scale_arr.shape)
        w = (self.array(q).astype(np.float32) - zp) * scale_arr
        self.g.initializer.append(numpy_helper.from_array(w.astype(np.float32), new_name))
        return new_name

    def only_consumer(self, name: str) -> onnx.NodeProto:
        (node,) = self.consumers[name]
        return node


def dequantize_model(model: onnx.ModelProto) -> onnx.ModelProto:
    g = Graph(model.graph)
    replaced: list[tuple[onnx.NodeProto, list[onnx.NodeProto]]] = []  # (new node, nodes it replaces)

    for node in list(model.graph.node):
        if node.op_type == "MatMulInteger":
            x_q, w_q, _x_zp, w_zp = node.input
            dql = g.producer[x_q]
            cast = g.only_consumer(node.output[0])
            mul = g.only_consumer(cast.output[0])
            scales_mul = g.producer[next(i for i in mul.input if i != cast.output[0])]
            w_scale = next(i for i in scales_mul.input if i in g.inits)
            w = g.dequantize(w_q, w_scale, w_zp, w_q.removesuffix("_quantized") + "_dequantized")
            new = helper.make_node("MatMul", [dql.input[0], w], [mul.output[0]], name=node.name + "_float")
            replaced.append((new, [node, cast, mul]))
        elif node.op_type == "QAttention":
            x_q, w_q, bias, _x_scale, w_scale, mask, _x_zp, w_zp = (list(node.input) + [""] * 9)[:8]
            dql = g.producer[x_q]
            w = g.dequantize(w_q, w_scale, w_zp, w_q.removesuffix("_quantized") + "_dequantized")
            new = helper.make_node(
                "Attention", [dql.input[0], w, bias, mask], list(node.output), name=node.name + "_float",
                domain="com.microsoft",
            )
            new.attribute.extend(a for a in node.attribute if a.name in ("num_heads", "unidirectional"))
            replaced.append((new, [node]))
        elif node.op_type == "DequantizeLinear" and g.producer.get(node.input[0], None) is not None:
            gather = g.producer[node.input[0]]
            assert gather.op_type == "Gather" and gather.input[0] in g.inits, "unexpected DequantizeLinear input"
            table = g.dequantize(gather.input[0], node.input[1], node.input[2],
                                 gather.input[0].removesuffix("_quantized") + "_dequantized")
            new = helper.make_node("Gather", [table, gather.input[1]], [node.output[0]], name=gather.name + "_float",
                                   **{a.name: helper.get_attribute_value(a) for a in gather.attribute})
            replaced.append((new, [gather, node]))

    # Rebuild the node list in order: each float node takes the place of the first node it replaces.
    first = {id(old[0]): new for new, old in replaced}
    dropped = {id(n) for _, old in replaced for n in old}
    nodes = []
    for n in model.graph.node:
        if id(n) in first:
            nodes.append(first[id(n)])
        elif id(n) not in dropped:
            nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    prune(model)
    leftovers = {n.op_type for n in model.graph.node} & {"MatMulInteger", "QAttention", "DynamicQuantizeLinear",
                                                          "DequantizeLinear", "QEmbedLayerNormalization"}
    assert not leftovers, f"quantized ops left: {leftovers}"
    return model


def prune(model: onnx.ModelProto) -> None:
    """Drops nodes whose outputs nobody reads (the orphaned DynamicQuantizeLinear and scale Muls) and
    initializers no node reads."""
    graph_outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | graph_outputs
        keep = [n for n in model.graph.node if any(o in used for o in n.output)]
        if len(keep) == len(model.graph.node):
            break
        del model.graph.node[:]
        model.graph.node.extend(keep)
    used = {i for n in model.graph.node for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--int8", type=Path, default=ARTIFACT_DIR / "model.int8.onnx")
    ap.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    ap.add_argument("--out", type=Path, default=None, help="default: model.<precision>.onnx beside --int8")
    ap.add_argument("--fuse-attention", action="store_true",
                    help="fuse attention into the Attention op (faster at fixed lengths; see above before using)")
    args = ap.parse_args()
    out = args.out or args.int8.with_name(f"model.{args.precision}.onnx")

    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    model = dequantize_model(onnx.load(str(args.int8)))
    # Keep the word-embedding Gather un-fused: EmbedLayerNormalization would bake in position-id assumptions.
    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False
    options.enable_attention = args.fuse_attention
    fused = optimizer.optimize_model(model, model_type="bert", num_heads=12, hidden_size=384,
                                     optimization_options=options, opt_level=0)
    if not any(o.domain == "com.microsoft" for o in fused.model.opset_import):
        fused.model.opset_import.append(helper.make_opsetid("com.microsoft", 1))  # fusions add contrib ops
    if args.precision == "fp16":
        fused.convert_float_to_float16(keep_io_types=True)
    fused.topological_sort()
    onnx.checker.check_model(fused.model)
    out.parent.mkdir(parents=True, exist_ok=True)
    fused.save_model_to_file(str(out))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {args.precision}); "
          f"fused: {fused.get_fused_operator_statistics()}")


if __name__ == "__main__":
    main()
