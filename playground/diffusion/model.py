"""Class-conditional ε-prediction denoisers for 28×28×1 digits: a lean U-Net and a small DiT.

Both take ``(x_t, t, y)`` and return ε̂_θ(x_t, t, y) shaped like ``x_t``:

- ``x_t``: (B, 1, 28, 28) noisy digits in roughly [-1, 1] scale;
- ``t``: (B,) timesteps, int or float (DPM-Solver/Euler ask for fractional ones), 0 … T-1;
- ``y``: (B,) class indices 0 … 9, or ``num_classes`` (= 10) for "no label": the null class that label
  dropout trains, so one network gives both ε̂(x_t, y) and ε̂(x_t, ∅) for classifier-free guidance
  (Ho & Salimans 2022).

Shapes in end-of-line comments: B = batch, E = embedding width, C = channels, N = tokens, D = width.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

KINDS = ("unet", "dit")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The seed's ``SinusoidalPositionEmbeddings`` (Transformer positional code, Vaswani et al. 2017 §3.5,
    used for t by DDPM §4): [sin(t·ω_k), cos(t·ω_k)], ω_k = max_period^{-k/(dim/2-1)}. (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(max_period) / (half - 1)))
    args = t.float()[:, None] * freqs[None, :]                               # (B, dim/2)
    return torch.cat([args.sin(), args.cos()], dim=-1)                      # (B, dim)


def _broadcast_t(t: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    return t.expand(batch) if t.dim() == 0 else t


# ----------------------------------------------------------------------------------------- U-Net
@dataclass
class UNetConfig:
    """A lean U-Net: ``channels[i]`` at resolution 28 / 2^i (28, 14, 7 for three levels)."""

    kind: str = "unet"
    image_size: int = 28
    in_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 128)
    blocks: int = 1                    # residual blocks per level on the way down (and up)
    mid_blocks: int = 1                # residual blocks at the lowest resolution, around the attention
    attention: bool = True             # one self-attention block at the lowest resolution (7×7)
    heads: int = 4
    emb_dim: int = 128                 # E: width of the time + class embedding
    num_classes: int = 10              # label ``num_classes`` is the null label (CFG)
    groups: int = 8                    # GroupNorm groups
    merge: str = "fuse"                # skip merge: fuse (1×1 conv 2C→C, then ResBlock C→C; 16% fewer FLOPs)
                                       # | concat (ResBlock 2C→C, the classic U-Net)

    def __post_init__(self) -> None:
        assert self.kind == "unet", f"kind must be 'unet', got {self.kind!r}"
        assert self.merge in {"concat", "fuse"}, f"merge must be concat or fuse, got {self.merge!r}"
        self.channels = tuple(int(c) for c in self.channels)
        assert len(self.channels) >= 1 and all(c % self.groups == 0 for c in self.channels)
        assert self.image_size % 2 ** (len(self.channels) - 1) == 0, "each level halves the image"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class ResBlock(nn.Module):
    """The seed's ``ResidualBlock`` with FiLM conditioning: GN → (1 + scale)·h + shift → SiLU → conv
    ("scale-shift norm", iDDPM / Dhariwal & Nichol 2021 "AdaGN", eq. AdaGN(h, y) = y_s GN(h) + y_b)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)                                    # each block starts as identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))                                # (B, Cout, H, W)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)       # (B, Cout, 1, 1) each
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(h)                                  # (B, Cout, H, W)


class Attention2d(nn.Module):
    """Multi-head self-attention over the H·W positions (DDPM §B: attention at 16×16; ours at 7×7)."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        assert channels % heads == 0
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)                            # (B, heads, HW, C/heads)
        o = F.scaled_dot_product_attention(q, k, v)                          # (B, heads, HW, C/heads)
        o = o.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(o)


class UNet(nn.Module):
    """Encoder (ResBlocks, stride-2 convs) → bottleneck (attention and ``mid_blocks`` ResBlocks) → decoder
    (2×2 transposed convs, skip concatenation merged by a 1×1 conv, ResBlocks): the seed's ``SimpleUNet``
    grown by one level, class conditioning and attention. Time t and label y are embedded once and fed
    to every block.

    Sized for CPU sampling: every 3×3 conv costs the same ~14 MFLOP per image at every level (channels
    double as the side halves), and the 1×1 merge saves the 3×3 conv over 2C channels of the classic
    decoder (16% of the FLOPs)."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch, e = cfg.channels, cfg.emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(ch[0], e), nn.SiLU(), nn.Linear(e, e))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, e)                # row num_classes = null label
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cin = ch[0]
        for i, c in enumerate(ch):
            self.down.append(nn.ModuleList([ResBlock(cin if j == 0 else c, c, e, cfg.groups)
                                            for j in range(cfg.blocks)]))
            cin = c
            if i < len(ch) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        mid: list[nn.Module] = [ResBlock(ch[-1], ch[-1], e, cfg.groups) for _ in range(cfg.mid_blocks)]
        if cfg.attention:
            mid.insert(len(mid) // 2 + len(mid) % 2, Attention2d(ch[-1], cfg.heads, cfg.groups))
        self.mid = nn.ModuleList(mid)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(ch))):
            c = ch[i]
            first = 2 * c if cfg.merge == "concat" else c
            self.up.append(nn.ModuleList([ResBlock(first if j == 0 else c, c, e, cfg.groups)
                                          for j in range(cfg.blocks)]))
            self.merge.append(nn.Conv2d(2 * c, c, 1) if cfg.merge == "fuse" else nn.Identity())
            if i > 0:
                self.upsample.append(nn.ConvTranspose2d(c, ch[i - 1], 2, stride=2))
        self.norm_out = nn.GroupNorm(cfg.groups, ch[0])
        self.conv_out = nn.Conv2d(ch[0], cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)                                 # ε̂ starts at 0 (DDPM's init)
        nn.init.zeros_(self.conv_out.bias)

    def embed(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """emb = MLP(sinusoid(t)) + Embedding(y): (B,), (B,) -> (B, E)."""
        return self.time_mlp(timestep_embedding(t, self.cfg.channels[0])) + self.label_emb(y)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
        emb = self.embed(_broadcast_t(t, x.shape[0], x.device), y)           # (B, E)
        h = self.conv_in(x)                                                  # (B, C0, 28, 28)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)                                                  # (B, Ci, 28/2^i, 28/2^i)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        for block in self.mid:                                               # (B, C_last, 7, 7)
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        for i, blocks in enumerate(self.up):
            h = self.merge[i](torch.cat([h, skips.pop()], dim=1))            # (B, 2 Ci or Ci, H, W)
            for block in blocks:
                h = block(h, emb)
            if i < len(self.upsample):
                h = self.upsample[i](h)                                      # (B, C_{i-1}, 2H, 2W)
        return self.conv_out(F.silu(self.norm_out(h)))                       # (B, 1, 28, 28)


# ------------------------------------------------------------------------------------------- DiT
@dataclass
class DiTConfig:
    """A small DiT (Peebles & Xie 2023, arXiv:2212.09748): patch 4 on 28×28 gives 7×7 = 49 tokens."""

    kind: str = "dit"
    image_size: int = 28
    in_channels: int = 1
    patch: int = 4
    dim: int = 128                     # D
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    freq_dim: int = 128                # width of the sinusoidal time code fed to the time MLP
    num_classes: int = 10

    def __post_init__(self) -> None:
        assert self.kind == "dit", f"kind must be 'dit', got {self.kind!r}"
        assert self.image_size % self.patch == 0 and self.dim % self.heads == 0

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position code (MAE / DiT ``get_2d_sincos_pos_embed``): half the width
    encodes the row, half the column. -> (grid², dim)."""
    assert dim % 4 == 0
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")

    def code(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]                               # (N, dim/4)
        return torch.cat([out.sin(), out.cos()], dim=1)                      # (N, dim/2)

    return torch.cat([code(ys), code(xs)], dim=1).float()                    # (N, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: LN(x)·(1 + scale) + shift, per sample. (B, N, D), (B, D), (B, D) -> (B, N, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Seed §10.1 ``DiTBlock``: pre-LN attention and MLP, each modulated by (shift, scale) and scaled by
    a gate, all six regressed from the condition c = emb(t) + emb(y). adaLN-*Zero*: the regression is
    zero-initialised, so every block starts as the identity (DiT §3.2)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def attn(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)                          # (B, heads, N, D/heads)
        return self.proj(o.transpose(1, 2).reshape(b, n, d))                 # (B, N, D)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x                                                             # (B, N, D)


class DiT(nn.Module):
    """patchify → + position code → DiT blocks (adaLN-Zero on t and y) → adaLN final layer → unpatchify."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, p = cfg.dim, cfg.patch
        self.patch_embed = nn.Conv2d(cfg.in_channels, d, p, stride=p)        # patchify: (B, D, 7, 7)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(d, cfg.grid)[None], persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, d)                # row num_classes = null label
        self.blocks = nn.ModuleList([DiTBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.adaLN_out = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.head = nn.Linear(d, p * p * cfg.in_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's ``initialize_weights``: Xavier linears, N(0, 0.02) embeddings, zeroed adaLN and head."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.label_emb.weight, std=0.02)
        for lin in (self.time_mlp[0], self.time_mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        for blk in self.blocks:
            nn.init.zeros_(blk.adaLN_modulation[-1].weight)
            nn.init.zeros_(blk.adaLN_modulation[-1].bias)
        for lin in (self.adaLN_out[-1], self.head):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p²·C) -> (B, C, H, W)."""
        b, g, p, c = x.shape[0], self.cfg.grid, self.cfg.patch, self.cfg.in_channels
        x = x.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)             # (B, C, g, p, g, p)
        return x.reshape(b, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor) -> torch.Tensor:
        t = _broadcast_t(t, x.shape[0], x.device)
        h = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, D)
        c = self.time_mlp(timestep_embedding(t, self.cfg.freq_dim)) + self.label_emb(y)  # (B, D)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.adaLN_out(c).chunk(2, dim=-1)
        h = self.head(modulate(self.norm_out(h), shift, scale))              # (B, N, p²·C)
        return self.unpatchify(h)                                            # (B, C, 28, 28)


# --------------------------------------------------------------------------------------- factory
DenoiserConfig = UNetConfig | DiTConfig


def config_from_dict(d: dict[str, Any]) -> DenoiserConfig:
    """Rebuild a config from ``to_dict()`` output (``config.json``'s ``model``)."""
    kind = d.get("kind", "unet")
    assert kind in KINDS, f"kind must be one of {KINDS}, got {kind!r}"
    return UNetConfig(**d) if kind == "unet" else DiTConfig(**d)


def build(cfg: DenoiserConfig) -> nn.Module:
    """The network for ``cfg`` (a :class:`UNetConfig` or :class:`DiTConfig`)."""
    return UNet(cfg) if isinstance(cfg, UNetConfig) else DiT(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
