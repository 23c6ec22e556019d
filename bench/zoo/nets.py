"""PyTorch models shaped like the ones users bring, for the zoo (dev only: needs torch).

Written from the published architectures, not copied: what matters for the converter is the op
pattern each family exports, so each class keeps the structure and the tensor plumbing of its
original and shrinks only the widths.

    YoloV5        C3 blocks, 6x6 stem, SPPF, PAN neck, anchor-based head: sigmoid then grid/anchor
                  arithmetic per scale, reshaped and concatenated -> [1, 25200, 85] at 640
    YoloV8        Conv-BN-SiLU, C2f (Split + Concat), SPPF (MaxPool + Concat), PAN neck (nearest
                  Upsample + Concat), decoupled head concatenated over 3 scales, DFL (Softmax over
                  16 bins + a 1x1 conv), boxes decoded against constant anchors -> [1, 84, anchors];
                  ``postprocess=True`` adds score filtering in the graph (TopK + boolean mask = NonZero)
    DBNet         small MobileNetV3-like backbone, FPN (1x1 laterals, Upsample + Add, Concat), head
                  with two ConvTranspose 2x upsamplings and a Sigmoid -> [1, 1, H, W]
    CRNN          conv stack down to height 1, 2-layer bidirectional LSTM, Linear -> CTC logits [1, T, C]
    VadBranch     silero-like: STFT as a Conv1d with a DFT basis, magnitude, conv encoder, LSTM with
                  state in/out, sigmoid probability; two of these sit in an If on the sample rate
    TinyBert      Gather embeddings (word + position), LayerNorm, MatMul attention + Softmax with an
                  additive mask, GELU feed-forward, tanh pooler, classifier
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


# --- YOLOv8-style detector ---------------------------------------------------------------------
class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, p=None):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True):
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c2, 3), Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=False):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1, self.cv2 = Conv(c1, c_, 1), Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Detect(nn.Module):
    """Decoupled head over 3 scales, DFL box decoding, sigmoid class scores: [1, 4 + nc, anchors]."""

    def __init__(self, nc, ch, size, strides=(8, 16, 32), reg_max=16):
        super().__init__()
        self.nc, self.reg_max, self.no = nc, reg_max, nc + 4 * reg_max
        c2, c3 = max(16, ch[0] // 4, 4 * reg_max), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.dfl.weight.data[:] = torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1)
        for a, b, s in zip(self.cv2, self.cv3, strides):   # the published bias initialisation
            a[-1].bias.data[:] = 1.0
            b[-1].bias.data[:] = math.log(5 / nc / (640 / s) ** 2)
        anchors, stride = [], []
        for s in strides:
            h, w = size // s, size // s
            sy, sx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            anchors.append(torch.stack((sx, sy), -1).view(-1, 2))
            stride.append(torch.full((h * w, 1), float(s)))
        self.register_buffer("anchors", torch.cat(anchors).T.unsqueeze(0))     # [1, 2, A]
        self.register_buffer("strides", torch.cat(stride).T.unsqueeze(0))     # [1, 1, A]

    def forward(self, xs):
        xs = [torch.cat((a(x), b(x)), 1) for x, a, b in zip(xs, self.cv2, self.cv3)]
        x = torch.cat([x.view(x.shape[0], self.no, -1) for x in xs], 2)
        box, cls = x.split((4 * self.reg_max, self.nc), 1)
        b, _, a = box.shape
        dist = self.dfl(box.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)).view(b, 4, a)
        lt, rb = dist.chunk(2, 1)
        x1y1, x2y2 = self.anchors - lt, self.anchors + rb
        xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * self.strides
        return torch.cat((xywh, cls.sigmoid()), 1)


class YoloV8(nn.Module):
    """YOLOv8n-sized (width 0.25, depth 0.33): 3x``size``x``size`` in [0, 1] -> [1, 84, anchors]."""

    def __init__(self, size=640, nc=80, postprocess=False):
        super().__init__()
        w = [16, 32, 64, 128, 256]
        self.b = nn.ModuleList([Conv(3, w[0], 3, 2), Conv(w[0], w[1], 3, 2), C2f(w[1], w[1], 1, True),
                                Conv(w[1], w[2], 3, 2), C2f(w[2], w[2], 2, True), Conv(w[2], w[3], 3, 2),
                                C2f(w[3], w[3], 2, True), Conv(w[3], w[4], 3, 2), C2f(w[4], w[4], 1, True),
                                SPPF(w[4], w[4])])
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n12, self.n15 = C2f(w[4] + w[3], w[3]), C2f(w[3] + w[2], w[2])
        self.d16, self.n18 = Conv(w[2], w[2], 3, 2), C2f(w[2] + w[3], w[3])
        self.d19, self.n21 = Conv(w[3], w[3], 3, 2), C2f(w[3] + w[4], w[4])
        self.detect = Detect(nc, (w[2], w[3], w[4]), size)
        self.postprocess = postprocess

    def forward(self, x):
        saved = {}
        for i, m in enumerate(self.b):
            x = m(x)
            saved[i] = x
        p4 = self.n12(torch.cat((self.up(saved[9]), saved[6]), 1))
        p3 = self.n15(torch.cat((self.up(p4), saved[4]), 1))
        p4 = self.n18(torch.cat((self.d16(p3), p4), 1))
        p5 = self.n21(torch.cat((self.d19(p4), saved[9]), 1))
        out = self.detect([p3, p4, p5])
        return self._filter(out) if self.postprocess else out

    @staticmethod
    def _filter(out, k=100, threshold=0.25):
        """In-graph post-processing as some exports ship it: top-k by score, then a score threshold."""
        boxes, scores = out[0, :4].T, out[0, 4:]
        best, cls = scores.max(0)
        top, idx = best.topk(k)
        keep = top > threshold
        return boxes[idx][keep], top[keep], cls[idx][keep]


class C3(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=True):
        super().__init__()
        c_ = c2 // 2
        self.cv1, self.cv2, self.cv3 = Conv(c1, c_, 1), Conv(c1, c_, 1), Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class DetectV5(nn.Module):
    """Anchor-based head: sigmoid, xy = (2s - 0.5 + grid) * stride, wh = (2s)^2 * anchor -> [1, N, 5 + nc]."""
    ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))

    def __init__(self, nc, ch, size, strides=(8, 16, 32)):
        super().__init__()
        self.no, self.na, self.strides = nc + 5, 3, strides
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in ch)
        for conv, s in zip(self.m, strides):          # the published bias initialisation
            b = conv.bias.data.view(self.na, -1)
            b[:, 4] = math.log(8 / (640 / s) ** 2)
            b[:, 5:] = math.log(0.6 / (nc - 0.99))
        for i, s in enumerate(strides):
            n = size // s
            yv, xv = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            grid = torch.stack((xv, yv), 2).view(1, 1, n, n, 2).expand(1, self.na, n, n, 2).float() - 0.5
            anchor = torch.tensor(self.ANCHORS[i], dtype=torch.float32).view(1, self.na, 1, 1, 2)
            self.register_buffer(f"grid{i}", grid)
            self.register_buffer(f"anchor{i}", anchor.expand(1, self.na, n, n, 2).contiguous())

    def forward(self, xs):
        z = []
        for i, x in enumerate(xs):
            b, _, ny, nx = x.shape
            y = self.m[i](x).view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
            xy = (y[..., :2] * 2 + getattr(self, f"grid{i}")) * self.strides[i]
            wh = (y[..., 2:4] * 2) ** 2 * getattr(self, f"anchor{i}")
            z.append(torch.cat((xy, wh, y[..., 4:]), 4).view(b, -1, self.no))
        return torch.cat(z, 1)


class YoloV5(nn.Module):
    """YOLOv5n-sized: 3x``size``x``size`` in [0, 1] -> [1, 3 * (size/8)^2 * 21/16, 85]."""

    def __init__(self, size=640, nc=80):
        super().__init__()
        w = [16, 32, 64, 128, 256]
        self.b = nn.ModuleList([Conv(3, w[0], 6, 2, 2), Conv(w[0], w[1], 3, 2), C3(w[1], w[1], 1),
                                Conv(w[1], w[2], 3, 2), C3(w[2], w[2], 2), Conv(w[2], w[3], 3, 2),
                                C3(w[3], w[3], 3), Conv(w[3], w[4], 3, 2), C3(w[4], w[4], 1), SPPF(w[4], w[4])])
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h10, self.h13 = Conv(w[4], w[3], 1), C3(2 * w[3], w[3], 1, False)
        self.h14, self.h17 = Conv(w[3], w[2], 1), C3(2 * w[2], w[2], 1, False)
        self.h18, self.h20 = Conv(w[2], w[2], 3, 2), C3(2 * w[2], w[3], 1, False)
        self.h21, self.h23 = Conv(w[3], w[3], 3, 2), C3(2 * w[3], w[4], 1, False)
        self.detect = DetectV5(nc, (w[2], w[3], w[4]), size)

    def forward(self, x):
        saved = {}
        for i, m in enumerate(self.b):
            x = m(x)
            saved[i] = x
        p5 = self.h10(saved[9])
        p4 = self.h14(self.h13(torch.cat((self.up(p5), saved[6]), 1)))
        p3 = self.h17(torch.cat((self.up(p4), saved[4]), 1))
        n4 = self.h20(torch.cat((self.h18(p3), p4), 1))
        n5 = self.h23(torch.cat((self.h21(n4), p5), 1))
        return self.detect([p3, n4, n5])


# --- OCR: DBNet text detector, CRNN recognizer ------------------------------------------------
def conv_bn(c1, c2, k=3, s=1, groups=1, act=nn.ReLU):
    return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c2), act())


class InvertedResidual(nn.Module):
    """MobileNetV3 block: expand 1x1, depthwise kxk, project 1x1 (hardswish activations)."""

    def __init__(self, c1, c2, s, expand=3, k=3):
        super().__init__()
        mid = c1 * expand
        self.body = nn.Sequential(conv_bn(c1, mid, 1, act=nn.Hardswish), conv_bn(mid, mid, k, s, mid, nn.Hardswish),
                                  nn.Conv2d(mid, c2, 1, bias=False), nn.BatchNorm2d(c2))
        self.res = s == 1 and c1 == c2

    def forward(self, x):
        return x + self.body(x) if self.res else self.body(x)


class DBNet(nn.Module):
    """Differentiable-binarization text detector: probability map [1, 1, H, W]."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.Hardswish)
        chans = [(16, 24), (24, 40), (40, 80), (80, 160)]
        self.stages = nn.ModuleList(nn.Sequential(InvertedResidual(a, b, 2), InvertedResidual(b, b, 1, k=5))
                                    for a, b in chans)
        self.lateral = nn.ModuleList(nn.Conv2d(b, 64, 1, bias=False) for _, b in chans)
        self.smooth = nn.ModuleList(nn.Conv2d(64, 16, 3, 1, 1, bias=False) for _ in chans)
        self.head = nn.Sequential(conv_bn(64, 16, 3), nn.ConvTranspose2d(16, 16, 2, 2), nn.BatchNorm2d(16),
                                  nn.ReLU(), nn.ConvTranspose2d(16, 1, 2, 2), nn.Sigmoid())

    def forward(self, x):
        feats, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        lat = [l(f) for l, f in zip(self.lateral, feats)]          # strides 4, 8, 16, 32
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], scale_factor=2, mode="nearest")
        outs = [F.interpolate(s(l), scale_factor=2 ** i, mode="nearest") if i else s(l)
                for i, (s, l) in enumerate(zip(self.smooth, lat))]
        return self.head(torch.cat(outs[::-1], 1))


class CRNN(nn.Module):
    """Text recognizer: [1, 3, 32, W] -> CTC logits [1, W/4, classes]."""

    def __init__(self, classes=97, hidden=96):
        super().__init__()
        self.cnn = nn.Sequential(conv_bn(3, 32), nn.MaxPool2d(2, 2), conv_bn(32, 64), nn.MaxPool2d(2, 2),
                                 conv_bn(64, 128), conv_bn(128, 128), nn.MaxPool2d((2, 1), (2, 1)),
                                 conv_bn(128, 192), conv_bn(192, 192), nn.MaxPool2d((2, 1), (2, 1)),
                                 conv_bn(192, 256, 2), nn.MaxPool2d((2, 1), (2, 1)))
        self.rnn = nn.LSTM(256, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        f = self.cnn(x)                                 # [B, 256, 1, W/4]
        seq = f.squeeze(2).permute(0, 2, 1)             # [B, T, 256]
        out, _ = self.rnn(seq)
        return self.fc(out)


# --- streaming voice-activity detector ----------------------------------------------------------
class VadBranch(nn.Module):
    """One sample-rate branch: (audio [1, 512], state [2, 1, 128]) -> (probability [1, 1], state)."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        bins = n_fft // 2 + 1
        n = torch.arange(n_fft, dtype=torch.float32)
        k = torch.arange(bins, dtype=torch.float32)[:, None]
        window = torch.hann_window(n_fft, periodic=True)
        basis = torch.cat((torch.cos(2 * math.pi * k * n / n_fft), -torch.sin(2 * math.pi * k * n / n_fft))) * window
        self.register_buffer("stft_basis", basis[:, None, :])
        self.hop, self.pad = hop, n_fft // 4
        self.encoder = nn.Sequential(nn.Conv1d(bins, 128, 3, 1, 1), nn.ReLU(), nn.Conv1d(128, 64, 3, 2, 1), nn.ReLU(),
                                     nn.Conv1d(64, 64, 3, 2, 1), nn.ReLU(), nn.Conv1d(64, 128, 3, 1, 1), nn.ReLU())
        self.lstm = nn.LSTM(128, 128)
        self.out = nn.Conv1d(128, 1, 1)

    def forward(self, x, state):
        x = F.pad(x.unsqueeze(1), (self.pad, self.pad), mode="reflect")
        spec = F.conv1d(x, self.stft_basis, stride=self.hop)
        re, im = spec.chunk(2, 1)
        mag = torch.sqrt(re * re + im * im + 1e-9)
        feat = self.encoder(mag).permute(2, 0, 1)       # [T, 1, 128]
        out, (h, c) = self.lstm(feat, (state[0:1], state[1:2]))
        prob = torch.sigmoid(self.out(F.relu(out).permute(1, 2, 0))).mean(2)
        return prob, torch.cat((h, c), 0)


# --- BERT-like text encoder -------------------------------------------------------------------
class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.heads, self.dh = heads, d // heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-12), nn.LayerNorm(d, eps=1e-12)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x, bias):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dh) + bias, -1)
        x = self.ln1(x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d)))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x))))


class TinyBert(nn.Module):
    """(input_ids, attention_mask) [1, T] int64 -> (last_hidden_state [1, T, d], logits [1, 2])."""

    def __init__(self, vocab=4000, d=128, layers=2, heads=2, ff=512, max_len=128):
        super().__init__()
        self.word, self.pos = nn.Embedding(vocab, d), nn.Embedding(max_len, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ff) for _ in range(layers))
        self.pool, self.cls = nn.Linear(d, d), nn.Linear(d, 2)
        for p in self.parameters():                     # BERT's initialiser: N(0, 0.02)
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02 * 4)        # x4: random weights need some signal to show

    def forward(self, input_ids, attention_mask):
        t = input_ids.shape[1]
        pos = torch.arange(t, device=input_ids.device).unsqueeze(0)
        x = self.ln(self.word(input_ids) + self.pos(pos))
        bias = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        for layer in self.layers:
            x = layer(x, bias)
        return x, self.cls(torch.tanh(self.pool(x[:, 0])))
