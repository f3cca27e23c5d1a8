"""A small Vision Transformer trained on scikit-learn's bundled 8x8 digits.

The digits ship inside scikit-learn, so this trains on real images with no download.
timm-style blocks: pre-norm attention with attention dropout, an Mlp with GELU and
dropout, and stochastic-free residuals.

    python samples/vit_digits.py --steps 100 --batch-size 64
"""

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from sklearn.datasets import load_digits
except ImportError:  # pragma: no cover - depends on the machine
    load_digits = None


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features, drop=0.1):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    def __init__(self, dim, num_heads=4, attn_drop=0.1, proj_drop=0.1):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, drop=0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, attn_drop=drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, image=8, patch=2, dim=64, depth=4, heads=4, classes=10, drop=0.1):
        super().__init__()
        self.patch = patch
        n = (image // patch) ** 2
        self.embed = nn.Linear(patch * patch, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.pos_drop = nn.Dropout(drop)
        self.blocks = nn.Sequential(*[Block(dim, heads, drop=drop) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, img):
        B = img.shape[0]
        p = self.patch
        x = img.unfold(1, p, p).unfold(2, p, p).reshape(B, -1, p * p)
        x = torch.cat([self.cls.expand(B, -1, -1), self.embed(x)], dim=1)
        x = self.blocks(self.pos_drop(x + self.pos))
        return self.head(self.norm(x[:, 0]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=2, help="patch size in pixels (sequence length is (8/patch)^2 + 1)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if load_digits is None:
        raise SystemExit("vit_digits.py needs scikit-learn for its bundled digits data: pip install scikit-learn")
    if 8 % args.seq_len:
        raise SystemExit("--seq-len (patch size) must divide 8: use 1, 2, 4 or 8")

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    split = int(0.8 * len(images))
    tr, te = perm[:split], perm[split:]

    model = ViT(patch=args.seq_len, dim=args.dim, depth=args.depth).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"vit_digits: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, {len(tr)} train images, device {device}", flush=True)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        idx = tr[torch.randint(len(tr), (args.batch_size,), generator=gen)]
        x, y = images[idx].to(device), labels[idx].to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        print(f"step {step} loss {loss.item():.4f}", flush=True)
    model.eval()
    with torch.no_grad():
        acc = (model(images[te].to(device)).argmax(-1).cpu() == labels[te]).float().mean().item()
    print(f"test_accuracy {acc:.4f} time {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
