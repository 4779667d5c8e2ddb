"""PyTorch state dicts -> zoo variables.

Each family renames PyTorch's module paths onto the zoo's (Keras') layer names, as its
docstring in jaxcnn/models describes; tensors are transposed to Flax's layouts:

- Conv2d weight (out, in, H, W) -> kernel (H, W, in, out); a depthwise one
  (channels * multiplier, 1, H, W) -> (H, W, channels, multiplier);
- Linear weight (out, in) -> kernel (in, out); VGG's first classifier layer also has its
  rows reordered from PyTorch's flatten order (C, H, W) to NHWC's (H, W, C);
- BatchNorm2d weight, bias, running_mean, running_var -> scale, bias and the batch_stats
  mean, var (num_batches_tracked is dropped).

Layouts: torchvision's resnet18-152 (`layout='torch'`), vgg11-19 (and `_bn`),
densenet121-201, inception_v3 (the auxiliary classifier is dropped), mobilenet_v2 and
efficientnet_b0-b7; the CIFAR ResNets of the widely used reproduction of He et al.
(`conv1`, `bn1`, `layer<s>.<i>.conv<j>`, `linear`; DataParallel's `module.` prefix is
dropped); EfficientNet-Lite of the `efficientnet-lite-pytorch` package (`_conv_stem`,
`_blocks.<i>._expand_conv`, ..., `_fc`).
"""

from __future__ import annotations

import os
import re

import numpy as np

from jaxcnn.errors import UserError
from jaxcnn.pretrained.weights import Entry

_INCEPTION_BLOCKS = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7a", "Mixed_7b", "Mixed_7c"]


def _resnet(path: str, ctx) -> str | None:
    if path in ("conv1", "bn1"):
        return f"conv1_{'conv' if path == 'conv1' else 'bn'}"
    if path == "fc":
        return "head"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(?:(conv|bn)(\d)|downsample\.([01]))", path)
    if not m:
        return None
    stage, block, kind, j, down = m.groups()
    name = f"conv{int(stage) + 1}_block{int(block) + 1}"
    if down is not None:
        return f"{name}_0_{'conv' if down == '0' else 'bn'}"
    return f"{name}_{j}_{kind}"


def _cifar_resnet(path: str, ctx) -> str | None:
    if path in ("conv1", "bn1"):
        return path
    if path == "linear":
        return "head"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(?:(conv|bn)(\d)|shortcut\.([01]))", path)
    if not m:
        return None
    stage, block, kind, j, short = m.groups()
    name = f"stage{stage}_block{int(block) + 1}_"
    if short is not None:
        return f"{name}shortcut_{'conv' if short == '0' else 'bn'}"
    return f"{name}{kind}{j}"


def _vgg(path: str, ctx) -> str | None:
    m = re.fullmatch(r"features\.(\d+)", path)
    if m:
        return ctx["vgg_features"].get(int(m.group(1)))
    return {"classifier.0": "fc1", "classifier.3": "fc2", "classifier.6": "head"}.get(path)


def _densenet(path: str, ctx) -> str | None:
    fixed = {"features.conv0": "conv1_conv", "features.norm0": "conv1_bn", "features.norm5": "bn",
             "classifier": "head"}
    if path in fixed:
        return fixed[path]
    m = re.fullmatch(r"features\.denseblock(\d)\.denselayer(\d+)\.(norm|conv)(\d)", path)
    if m:
        block, layer, kind, j = m.groups()
        parts = {("norm", "1"): "0_bn", ("conv", "1"): "1_conv", ("norm", "2"): "1_bn", ("conv", "2"): "2_conv"}
        return f"conv{int(block) + 1}_block{layer}_{parts[kind, j]}"
    m = re.fullmatch(r"features\.transition(\d)\.(norm|conv)", path)
    if m:
        return f"pool{int(m.group(1)) + 1}_{'bn' if m.group(2) == 'norm' else 'conv'}"
    return None


def _inception(path: str, ctx) -> str | None:
    if path.startswith("AuxLogits."):
        return ""  # dropped
    if path == "fc":
        return "head"
    m = re.fullmatch(r"(Conv2d_\w+)\.(conv|bn)", path)
    if m:
        return f"{m.group(1)}_{m.group(2)}"
    m = re.fullmatch(r"(Mixed_\w+)\.(\w+)\.(conv|bn)", path)
    if m and m.group(1) in _INCEPTION_BLOCKS:
        return f"mixed{_INCEPTION_BLOCKS.index(m.group(1))}_{m.group(2)}_{m.group(3)}"
    return None


def _mobilenet_v2(path: str, ctx) -> str | None:
    fixed = {"features.0.0": "Conv1", "features.0.1": "bn_Conv1", "features.18.0": "Conv_1",
             "features.18.1": "Conv_1_bn", "classifier.1": "head",
             "features.1.conv.0.0": "expanded_conv_depthwise", "features.1.conv.0.1": "expanded_conv_depthwise_BN",
             "features.1.conv.1": "expanded_conv_project", "features.1.conv.2": "expanded_conv_project_BN"}
    if path in fixed:
        return fixed[path]
    m = re.fullmatch(r"features\.(\d+)\.conv\.(\d)(?:\.(\d))?", path)
    if not m:
        return None
    block, part, sub = int(m.group(1)) - 1, m.group(2), m.group(3)
    names = {("0", "0"): "expand", ("0", "1"): "expand_BN", ("1", "0"): "depthwise", ("1", "1"): "depthwise_BN",
             ("2", None): "project", ("3", None): "project_BN"}
    suffix = names.get((part, sub))
    return f"block_{block}_{suffix}" if suffix else None


def _efficientnet(path: str, ctx) -> str | None:
    """torchvision's efficientnet_b*: features.<stage>.<block>.block.<part>..."""
    fixed = {"features.0.0": "stem_conv", "features.0.1": "stem_bn", "classifier.1": "head"}
    if path in fixed:
        return fixed[path]
    last = ctx["last_stage"]
    m = re.fullmatch(r"features\.(\d+)\.(\d+)(?:\.(\d))?", path)
    if m and int(m.group(1)) == last + 1 and m.group(3) is None:
        return {"0": "top_conv", "1": "top_bn"}.get(m.group(2))
    m = re.fullmatch(r"features\.(\d+)\.(\d+)\.block\.(\d)\.(\d|fc1|fc2)", path)
    if not m:
        return None
    stage, block, part, sub = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
    prefix = f"block{stage}{chr(ord('a') + block)}_"
    expands = stage != 1  # the first stage's blocks have expansion 1: no expand convolution
    parts = (["expand"] if expands else []) + ["dw", "se", "project"]
    if part >= len(parts):
        return None
    kind = parts[part]
    if kind == "se":
        return {"fc1": f"{prefix}se_reduce", "fc2": f"{prefix}se_expand"}.get(sub)
    names = {"expand": ("expand_conv", "expand_bn"), "dw": ("dwconv", "bn"), "project": ("project_conv", "project_bn")}
    return prefix + names[kind][int(sub)] if sub in ("0", "1") else None


def _efficientnet_lite(path: str, ctx) -> str | None:
    """efficientnet-lite-pytorch (lukemelas' EfficientNet-PyTorch layout)."""
    fixed = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv", "_bn1": "top_bn", "_fc": "head"}
    if path in fixed:
        return fixed[path]
    m = re.fullmatch(r"_blocks\.(\d+)\.(_\w+)", path)
    if not m or int(m.group(1)) >= len(ctx["blocks"]):
        return None
    parts = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv", "_bn1": "bn",
             "_se_reduce": "se_reduce", "_se_expand": "se_expand", "_project_conv": "project_conv",
             "_bn2": "project_bn"}
    return ctx["blocks"][int(m.group(1))] + parts[m.group(2)] if m.group(2) in parts else None


def family(arch: str, state_dict: dict):
    """(rename function, model options) for `arch` given its state dict's keys."""
    if re.fullmatch(r"resnet(18|34|50|101|152)", arch):
        return _resnet, {"layout": "torch"}
    if re.fullmatch(r"resnet\d+", arch):
        return _cifar_resnet, ({"shortcut": "B"} if any(".shortcut." in k for k in state_dict) else {})
    if arch.startswith("vgg"):
        return _vgg, {"batch_norm": any(k.endswith("running_mean") for k in state_dict)}
    if arch.startswith("densenet"):
        return _densenet, {"layout": "torch"}
    if arch == "inception_v3":
        return _inception, {"layout": "torch"}
    if arch == "mobilenet_v2":
        return _mobilenet_v2, {"layout": "torch"}
    if arch.startswith("efficientnet_lite"):
        return _efficientnet_lite, {}
    if arch.startswith("efficientnet_b"):
        return _efficientnet, {"layout": "torch", "include_preprocessing": False}
    return None, None


def _context(arch: str, state_dict: dict, variables) -> dict:
    params = variables.get("params", {})
    ctx: dict = {}
    if arch.startswith("vgg"):  # features.<i>: the convolutions in order (and their BatchNorms)
        convs = [n for n in params if re.fullmatch(r"block\d_conv\d", n)]
        indices = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"features\.(\d+)\.weight$", k))
                          and np.ndim(state_dict[k]) == 4})
        ctx["vgg_features"] = dict(zip(indices, convs))
        ctx["vgg_features"].update({i + 1: f"{name}_bn" for i, name in zip(indices, convs)})
    if arch.startswith("efficientnet"):
        blocks = sorted({m.group(1) for n in params if (m := re.match(r"(block\d[a-z]_)", n))},
                        key=lambda b: (int(b[5]), b[6]))
        ctx["blocks"] = blocks
        ctx["last_stage"] = max(int(b[5]) for b in blocks)
    return ctx


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def _kernel(value: np.ndarray, target: tuple | None) -> np.ndarray:
    """A Conv2d weight in Flax's layout, as a regular or a depthwise kernel (whichever fits)."""
    regular = value.transpose(2, 3, 1, 0)
    if value.shape[1] == 1 and target is not None and tuple(regular.shape) != tuple(target):
        out_channels, _, h, w = value.shape
        channels = target[2] if len(target) == 4 else out_channels
        if out_channels % channels:
            return regular
        depthwise = value.reshape(out_channels, h, w).transpose(1, 2, 0).reshape(h, w, channels, -1)
        if tuple(depthwise.shape) == tuple(target):
            return depthwise
    return regular


def _dense(value: np.ndarray, layer: str, arch: str, variables) -> np.ndarray:
    kernel = value.T
    if arch.startswith("vgg") and layer == "fc1":  # rows from (C, H, W) to (H, W, C) flatten order
        channels = 512
        side = int(round((kernel.shape[0] // channels) ** 0.5))
        if side * side * channels == kernel.shape[0]:
            kernel = kernel.reshape(channels, side, side, -1).transpose(1, 2, 0, 3).reshape(kernel.shape[0], -1)
    return kernel


def entries(state_dict: dict, arch: str, variables) -> list[Entry]:
    """The state dict's tensors as Entries for `weights.assign`."""
    rename, _ = family(arch, state_dict)
    if rename is None:
        raise UserError(f"jaxcnn cannot import PyTorch weights of {arch}; PyTorch layouts exist for: "
                        + ", ".join(TORCH_ARCHS))
    ctx = _context(arch, state_dict, variables)
    params, stats = variables.get("params", {}), variables.get("batch_stats", {})
    out = []
    for key, value in state_dict.items():
        path, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        layer = rename(path, ctx)
        if layer == "":
            continue  # a training-only part (Inception's auxiliary classifier)
        if layer is None:
            raise UserError(f"the weights have {key}, which has no place in {arch}; pass weights of {arch} "
                            "(torchvision's layout, or the one in jaxcnn/pretrained/torch.py)")
        value = _to_numpy(value)
        ours = params.get(layer, {})
        is_bn = "scale" in ours or layer in stats and "var" in stats[layer]
        if leaf in ("running_mean", "running_var"):
            out.append(Entry(layer, "batch_stats", "mean" if leaf == "running_mean" else "var", value, key))
        elif is_bn:
            out.append(Entry(layer, "params", "scale" if leaf == "weight" else "bias", value, key))
        elif leaf == "weight" and value.ndim == 4:
            target = ours.get("kernel")
            out.append(Entry(layer, "params", "kernel", _kernel(value, getattr(target, "shape", None)), key))
        elif leaf == "weight" and value.ndim == 2:
            out.append(Entry(layer, "params", "kernel", _dense(value, layer, arch, variables), key))
        else:
            out.append(Entry(layer, "params", leaf, value, key))
    return out


TORCH_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet20", "resnet32", "resnet44",
               "resnet56", "resnet110", "vgg11", "vgg13", "vgg16", "vgg19", "densenet121", "densenet169",
               "densenet201", "inception_v3", "mobilenet_v2", *(f"efficientnet_b{i}" for i in range(8)),
               *(f"efficientnet_lite{i}" for i in range(5)))


def load(path: str) -> dict:
    """A state dict from a PyTorch file: a plain state dict, or a checkpoint holding one under
    `state_dict` (or `model`); DataParallel's `module.` prefix removed. Read with
    weights_only=True: no code in the file runs."""
    if not os.path.isfile(path):
        raise UserError(f"weights file {path} does not exist; pass a PyTorch state dict file (.pth, .pt, .th)")
    try:
        import torch
    except ImportError:
        raise UserError("reading PyTorch weights needs torch: pip install 'jaxcnn[torch]'") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read {path} as PyTorch weights ({str(e).splitlines()[0][:200]}); "
                        "pass a state dict saved with torch.save") from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path} holds no state dict; save one with torch.save(model.state_dict(), path)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in data.items()}
