"""Find, read and replace the classification head of a shipped emotion graph (issue 17's head fine-tune).

The emotion model ends in a linear head 384 -> 8 on the mean-pooled encoder output (modeling.py). In the
int8 graph that quantize_dynamic wrote it is

    pooled -> DynamicQuantizeLinear -> MatMulInteger(head.weight_quantized) -> Cast -> Mul(x_scale * w_scale)
           -> Add(head.bias) -> logits

and in a graph this module wrote (a retrained candidate) it is a float `MatMul` + `Add`; a `Gemm` is read too.
`find_head` walks back from the `logits` output and returns the head's input tensor (the pooled
representation), its weights as float [384, 8] (dequantised: w = (q - zero_point) * scale, per output
column) and bias, and the nodes to remove. `feature_model` adds the pooled tensor as a second graph output;
`with_float_head` replaces the head by `MatMul` + `Add` with the given float weights (the rest of the graph,
int8 included, is untouched). `int8_head_reference` recomputes the quantized head in numpy (ONNX
DynamicQuantizeLinear and MatMulInteger semantics), to check that the head was read correctly.

The float head differs from the int8 one by the activation quantisation: DynamicQuantizeLinear rounds the
pooled vectors to uint8 with one scale per batch, so the int8 model's logits even depend slightly on their
batch-mates; the float head does not. On x86 CPUs with AVX2 but no VNNI instructions (AVX-512 VNNI or
AVX-VNNI), onnxruntime's uint8 x int8 kernel also adds each pair of products in int16 with saturation
(`vpmaddubsw`), so the int8 head is further from the float one there (measured 0.12 max abs logit on an AMD
EPYC with AVX2 only, against 0.02-0.03 with VNNI); `int8_head_reference(..., saturating=True)` computes that.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common import MODELS_DIR

sys.path.insert(0, str(MODELS_DIR))
from derive_fp16 import Graph, prune  # noqa: E402  (one graph index and pruning for models/)

OUTPUT = "logits"
FT_WEIGHT, FT_BIAS = "head.weight.ft", "head.bias.ft"


@dataclass
class Head:
    input: str  # tensor name of the pooled representation [batch, hidden]
    weight: np.ndarray  # float32 [hidden, labels]
    bias: np.ndarray  # float32 [labels]
    quantized: bool
    nodes: list[onnx.NodeProto] = field(repr=False)  # the head's nodes (removed by with_float_head)
    # Quantized heads only: the integer weights, their zero points and per-column scales.
    weight_q: np.ndarray | None = None
    weight_zero_point: np.ndarray | None = None
    weight_scale: np.ndarray | None = None


def _const_input(g: Graph, node: onnx.NodeProto) -> tuple[str, str]:
    """(the non-initializer input, the initializer input) of a binary node."""
    a, b = node.input[0], node.input[1]
    if b in g.inits and a not in g.inits:
        return a, b
    if a in g.inits and b not in g.inits:
        return b, a
    raise ValueError(f"head node {node.name} ({node.op_type}) has no single initializer input")


def find_head(model: onnx.ModelProto) -> Head:
    """The linear head producing `logits` (see the module docstring for the patterns read)."""
    g = Graph(model.graph)
    last = g.producer.get(OUTPUT)
    if last is None:
        raise ValueError(f"graph has no node producing {OUTPUT!r}")
    if last.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in last.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise ValueError("unsupported Gemm head (transA / alpha / beta)")
        w = g.array(last.input[1])
        w = w.T if attrs.get("transB", 0) else w
        return Head(last.input[0], w.astype(np.float32), g.array(last.input[2]).astype(np.float32), False, [last])
    if last.op_type != "Add":
        raise ValueError(f"unexpected head: {OUTPUT!r} comes from {last.op_type}, not Add or Gemm")
    matmul_out, bias_name = _const_input(g, last)
    bias = g.array(bias_name).astype(np.float32)
    before = g.producer[matmul_out]
    if before.op_type == "MatMul":  # float head (a candidate this module wrote, or an unquantized export)
        x, w_name = before.input
        if w_name not in g.inits:
            raise ValueError("float head MatMul without an initializer weight")
        return Head(x, g.array(w_name).astype(np.float32), bias, False, [before, last])
    if before.op_type != "Mul":
        raise ValueError(f"unexpected head: bias Add follows {before.op_type}")
    # quantize_dynamic's pattern (derive_fp16.dequantize_model reads the same one).
    cast = next(g.producer[i] for i in before.input if g.producer.get(i) is not None and g.producer[i].op_type == "Cast")
    scales_mul = g.producer[next(i for i in before.input if i != cast.output[0])]
    mmi = g.producer[cast.input[0]]
    if mmi.op_type != "MatMulInteger":
        raise ValueError(f"unexpected head: Cast follows {mmi.op_type}, not MatMulInteger")
    x_q, w_q, _x_zp, w_zp = mmi.input
    dql = g.producer[x_q]
    if dql.op_type != "DynamicQuantizeLinear":
        raise ValueError("quantized head input is not DynamicQuantizeLinear")
    w_scale = next(i for i in scales_mul.input if i in g.inits)
    q, zp, scale = g.array(w_q), g.array(w_zp), g.array(w_scale)
    weight = ((q.astype(np.float32) - zp.astype(np.float32)) * scale).astype(np.float32)
    nodes = [mmi, cast, scales_mul, before, last]
    # The activation quantizer goes too, unless something else reads it.
    if all(c in nodes for o in dql.output for c in g.consumers.get(o, [])):
        nodes.insert(0, dql)
    return Head(dql.input[0], weight, bias, True, nodes, q, zp, scale)


def feature_model(model: onnx.ModelProto, head: Head) -> onnx.ModelProto:
    """A copy of `model` that also outputs the head's input (float32 [batch, hidden])."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.append(helper.make_tensor_value_info(head.input, TensorProto.FLOAT, ["batch", head.weight.shape[0]]))
    return out


def with_float_head(model: onnx.ModelProto, head: Head, weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """A copy of `model` whose head is `logits = pooled @ weight + bias` in float32 (MatMul + Add)."""
    if weight.shape != head.weight.shape or bias.shape != head.bias.shape:
        raise ValueError(f"head shape {weight.shape}/{bias.shape}, expected {head.weight.shape}/{head.bias.shape}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    drop = {tuple(n.output) for n in head.nodes}  # outputs identify nodes (names may be empty)
    nodes = [n for n in out.graph.node if tuple(n.output) not in drop]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    inits = [t for t in out.graph.initializer if t.name not in (FT_WEIGHT, FT_BIAS)]
    del out.graph.initializer[:]
    out.graph.initializer.extend(inits)
    out.graph.initializer.extend([
        numpy_helper.from_array(np.ascontiguousarray(weight, dtype=np.float32), FT_WEIGHT),
        numpy_helper.from_array(np.ascontiguousarray(bias, dtype=np.float32), FT_BIAS),
    ])
    out.graph.node.extend([
        helper.make_node("MatMul", [head.input, FT_WEIGHT], ["head_ft_matmul"], name="/head_ft/MatMul"),
        helper.make_node("Add", ["head_ft_matmul", FT_BIAS], [OUTPUT], name="/head_ft/Add"),
    ])
    prune(out)  # the old head's initializers (and quantizer, if left) go
    names = {o for n in out.graph.node for o in n.output}
    kept_info = [v for v in out.graph.value_info if v.name in names]
    del out.graph.value_info[:]
    out.graph.value_info.extend(kept_info)
    onnx.checker.check_model(out)
    return out


def int8_head_reference(head: Head, pooled: np.ndarray, saturating: bool = False) -> np.ndarray:
    """The quantized head's logits for one batch, computed as onnxruntime does (ONNX operator semantics):
    DynamicQuantizeLinear over the whole batch (uint8, range always including 0, round half to even),
    MatMulInteger in int32, then (x_scale * w_scale) and the bias.

    saturating: as onnxruntime's x86 AVX2 kernel (no VNNI) computes the uint8 x int8 products: the raw
    products of inputs 2k and 2k+1 summed in int16 with saturation (`vpmaddubsw`), the zero points
    subtracted afterwards in int32. Exact on an AVX2-only CPU; without saturation it is exact on CPUs with
    VNNI (and wherever no pair reaches the int16 range)."""
    if not head.quantized:
        raise ValueError("not a quantized head")
    x = pooled.astype(np.float32)
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    x_scale = np.float32((hi - lo) / 255.0) if hi > lo else np.float32(1.0)
    x_zp = int(np.clip(np.rint(-lo / x_scale), 0, 255))
    x_q = np.clip(np.rint(x / x_scale) + x_zp, 0, 255).astype(np.int64)
    w_q = head.weight_q.astype(np.int64)
    w_zp = head.weight_zero_point.astype(np.int64)
    if saturating:
        products = x_q[:, :, None] * w_q[None, :, :]  # [batch, k, n]
        pairs = products.reshape(len(x_q), -1, 2, w_q.shape[1]).sum(2)
        raw = np.clip(pairs, -32768, 32767).sum(1)  # sum_k x_q * w_q, as the kernel adds it
        acc = raw - x_zp * w_q.sum(0) - x_q.sum(1)[:, None] * w_zp + w_q.shape[0] * x_zp * w_zp
    else:
        acc = (x_q - x_zp) @ (w_q - w_zp)
    return (acc.astype(np.float32) * (x_scale * head.weight_scale.astype(np.float32)) + head.bias).astype(np.float32)


def int8_head_error(head: Head, pooled: np.ndarray, logits: np.ndarray) -> float:
    """Max abs difference between the graph's `logits` for one batch and the closer of the two ways
    onnxruntime's CPU kernels compute the quantized head (exact int32, or AVX2's saturating pairs)."""
    return min(float(np.abs(int8_head_reference(head, pooled, saturating) - logits).max()) for saturating in (False, True))
