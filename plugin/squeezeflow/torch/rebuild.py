"""PyTorch models as graphs of real layers: rebuild nn.Conv/Linear/BatchNorm modules from an
exported program (MLflow's pt2 format), and fold BatchNorm into the convolution before it.

`torch.export.load(...).module()` is a GraphModule whose layers are aten calls on bare
parameters (`aten.conv2d(x, weight, bias, ...)`): no `nn.Conv2d` for Torch-Pruning to prune,
no module for BatchNorm folding or for training-mode BatchNorm. `with_modules` gives each such
call its module back, so every PyTorch step treats a pt2 source like the pickled module it came
from (same weights, same function, same graph).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

_CONV = {"aten.conv1d.default": 1, "aten.conv2d.default": 2}
_LINEAR = "aten.linear.default"
_BATCH_NORM = "aten.batch_norm.default"


def is_exported(model: Any) -> bool:
    """Whether `model` is a graph of aten calls on parameters (what torch.export and pt2 give)."""
    import torch.fx

    return isinstance(model, torch.fx.GraphModule) and any(
        str(n.target) in (*_CONV, _LINEAR, _BATCH_NORM) for n in model.graph.nodes if n.op == "call_function"
    )


def with_modules(model: Any) -> Any:
    """A GraphModule computing the same function as `model`, with each aten conv1d/conv2d, linear and
    batch_norm call on parameters replaced by an nn.Conv1d/Conv2d, nn.Linear or BatchNorm module.

    Models that are not exported graphs are returned as they are. The export's input guards are
    dropped (the rebuilt module takes any batch size; its shapes are checked when it is exported).

    Example:
        >>> gm = with_modules(torch.export.load("model.pt2").module())  # doctest: +SKIP
        >>> [type(m).__name__ for m in gm.children()][:2]  # doctest: +SKIP
        ['Conv2d', 'BatchNorm']
    """
    import torch
    import torch.fx

    if not is_exported(model):
        return model
    graph = torch.fx.Graph()  # a copy, owned by no module until the rebuilt one
    graph.output(graph.graph_copy(model.graph, {}))
    graph._codegen = copy.deepcopy(model.graph._codegen)  # the export's (un)flattening of inputs and outputs
    root = torch.nn.Module()
    for node in list(graph.nodes):
        target = str(node.target)
        if node.op == "call_module" and "guards" in str(node.target):  # the export's input checks (batch size range)
            if not node.users:
                graph.erase_node(node)
            continue
        if node.op != "call_function" or target not in (*_CONV, _LINEAR, _BATCH_NORM):
            continue
        count = 4 if target == _BATCH_NORM else 2  # (weight, bias, running_mean, running_var) or (weight, bias)
        params = [_attr(model, a) for a in node.args[1 : 1 + count]]
        params += [None] * (count - len(params))  # a trailing bias=None is left out of the call
        if params[0] is None:  # weights computed in the graph, not stored: leave the call as it is
            continue
        layer = (
            _conv(target, node, params)
            if target in _CONV
            else _linear(params)
            if target == _LINEAR
            else _batch_norm(node, params)
        )
        name = _unique(root, node.args[1].target.rsplit(".", 1)[0].replace(".", "_") or node.name)
        root.add_module(name, layer)
        with graph.inserting_before(node):
            new = graph.call_module(name, (node.args[0],))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    for node in list(graph.nodes):  # the parameters now live in the modules
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    for node in graph.nodes:
        if node.op == "get_attr":
            _copy_attr(model, root, node.target)
    graph.lint()
    rebuilt = torch.fx.GraphModule(root, graph)
    rebuilt.eval()
    return kept(model, rebuilt)


def kept(source: Any, derived: Any) -> Any:
    """`derived` with what load_torch keeps on `source` (its output names: `squeezeflow_*` attributes)."""
    for name, value in vars(source).items():
        if name.startswith("squeezeflow_"):
            setattr(derived, name, value)
    return derived


def fold_batchnorm(model: Any) -> Any:
    """A copy of `model` with every BatchNorm that directly follows a convolution (its only user) folded into it, in
    eval mode.

    Works on exported graphs (rebuilt with `with_modules`) and on modules torch.fx can trace;
    anything else is returned as it is (the exporter folds BatchNorm later anyway).
    """
    import torch
    import torch.fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    source = model
    model = kept(source, copy.deepcopy(with_modules(model)))
    if not isinstance(model, torch.fx.GraphModule):
        try:
            model = kept(source, torch.fx.symbolic_trace(model))
        except Exception:  # not symbolically traceable: cluster it as it is
            return model
    model.eval()
    modules = dict(model.named_modules())
    for node in list(model.graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            continue
        conv_node = node.args[0]
        conv = modules.get(conv_node.target) if getattr(conv_node, "op", "") == "call_module" else None
        if (
            not isinstance(conv, (torch.nn.Conv1d, torch.nn.Conv2d))
            or len(conv_node.users) != 1
            or not bn.track_running_stats
        ):
            continue
        _set_module(model, conv_node.target, fuse_conv_bn_eval(conv, bn))
        node.replace_all_uses_with(conv_node)
        model.graph.erase_node(node)
    model.graph.lint()
    model.recompile()
    model.delete_all_unused_submodules()
    return model


@functools.cache
def batch_norm_class() -> type:
    """BatchNorm over dimension 1 of an input of any rank (aten.batch_norm's semantics); a
    `_BatchNorm`, so Torch-Pruning and BatchNorm folding recognise it. Built on first use, so that
    importing this module does not import torch."""
    import torch

    class BatchNorm(torch.nn.modules.batchnorm._BatchNorm):
        def _check_input_dim(self, input: Any) -> None:
            if input.dim() < 2:
                raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    return BatchNorm


def _attr(model: Any, node: Any) -> Any:
    """The tensor a get_attr argument names, or None (an argument that is not a stored parameter)."""
    return _get(model, node.target) if getattr(node, "op", None) == "get_attr" else None


def _get(obj: Any, dotted: str) -> Any:
    """obj.a.b.c for "a.b.c" ("" is obj itself)."""
    return functools.reduce(getattr, dotted.split("."), obj) if dotted else obj


def _copy_attr(model: Any, root: Any, target: str) -> None:
    """Give `root` the attribute a remaining get_attr node reads (a constant of the graph)."""
    import torch

    value = _get(model, target)
    owner = root
    *parents, leaf = target.split(".")
    for part in parents:
        if not hasattr(owner, part):
            owner.add_module(part, torch.nn.Module())
        owner = getattr(owner, part)
    if isinstance(value, torch.nn.Parameter):
        owner.register_parameter(leaf, value)
    elif isinstance(value, torch.Tensor):
        owner.register_buffer(leaf, value)
    else:
        setattr(owner, leaf, value)


def _unique(root: Any, name: str) -> str:
    name = name if name and not name[0].isdigit() else f"layer_{name}"
    candidate, i = name, 1
    while hasattr(root, candidate):
        candidate, i = f"{name}_{i}", i + 1
    return candidate


def _set_module(model: Any, target: str, module: Any) -> None:
    parent, _, leaf = target.rpartition(".")
    setattr(_get(model, parent), leaf, module)


def _args(node: Any, names: tuple[str, ...], defaults: tuple) -> list[Any]:
    """A call's arguments, positional or by keyword, with the op's defaults."""
    args = list(node.args)
    return [args[i] if i < len(args) else node.kwargs.get(n, d) for i, (n, d) in enumerate(zip(names, defaults))]


def _conv(target: str, node: Any, params: list[Any]) -> Any:
    import torch

    weight, bias = params
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = (None, None, None, 1, 0, 1, 1)
    _, _, _, stride, padding, dilation, groups = _args(node, names, defaults)
    dims = _CONV[target]
    cls = torch.nn.Conv1d if dims == 1 else torch.nn.Conv2d
    padding = tuple(padding) if isinstance(padding, (list, tuple)) else padding  # or "same"/"valid", or one int
    conv = cls(
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=_tuple(stride, dims),
        padding=padding,
        dilation=_tuple(dilation, dims),
        groups=groups,
        bias=bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _tuple(value: Any, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * dims


def _linear(params: list[Any]) -> Any:
    import torch

    weight, bias = params
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _batch_norm(node: Any, params: list[Any]) -> Any:
    import torch

    weight, bias, mean, var = params
    names = ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps")
    defaults = (None, None, None, None, None, False, 0.1, 1e-5)
    values = _args(node, names, defaults)
    momentum, eps = values[6], values[7]
    features = (weight if weight is not None else mean).shape[0]
    bn = batch_norm_class()(
        features, eps=eps, momentum=momentum, affine=weight is not None, track_running_stats=mean is not None
    )
    with torch.no_grad():
        if weight is not None:
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
        if mean is not None:
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
    return bn
