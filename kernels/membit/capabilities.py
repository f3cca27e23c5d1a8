"""What the installed PyTorch can do, for the editor's memory advisor.

    python -m membit.capabilities

prints one JSON object::

    {"schema": "membit.capabilities/1", "torch": "<version>",
     "features": {"sdpa": bool, "sdpa-scale": bool, "is-causal": bool,
                  "autocast-bf16-cuda": bool, "autocast-bf16-cpu": bool,
                  "cuda": bool, "cuda-bf16": bool, "checkpoint-non-reentrant": bool,
                  "adamw-fused": bool, "adamw-foreach": bool}}

Every feature is found by trying it (small CPU ops, signatures, attributes), never by
reading the version string: distribution builds (Debian's 1.13) and nightlies carry
versions that say little about what they contain. Without torch it prints an object
with "torch": null and an "error", and exits 1.
"""

import inspect
import json
import sys
import warnings

SCHEMA = "membit.capabilities/1"


def _params(fn):
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}


def _manual_attention(q, k, v, scale, causal):
    import torch

    scores = (q @ k.transpose(-2, -1)) * scale
    if causal:
        n, m = scores.shape[-2:]
        keep = torch.ones(n, m, dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores.softmax(dim=-1) @ v


def _qkv():
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 2, 5, 8, generator=g) for _ in range(3)]


def sdpa():
    import torch

    fn = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
    if fn is None:
        return False
    q, k, v = _qkv()
    return bool(torch.allclose(fn(q, k, v), _manual_attention(q, k, v, 8**-0.5, False), atol=1e-5))


def sdpa_scale():
    import torch

    fn = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
    if fn is None:
        return False
    q, k, v = _qkv()
    # A torch that ignored or rejected the keyword fails one of these.
    return bool(torch.allclose(fn(q, k, v, scale=0.3), _manual_attention(q, k, v, 0.3, False), atol=1e-5))


def is_causal():
    import torch

    fn = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
    if fn is None:
        return False
    q, k, v = _qkv()
    return bool(torch.allclose(fn(q, k, v, is_causal=True), _manual_attention(q, k, v, 8**-0.5, True), atol=1e-5))


def autocast_bf16_cpu():
    import torch

    if not hasattr(torch, "autocast"):
        return False
    a = torch.randn(4, 4)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        return torch.mm(a, a).dtype == torch.bfloat16


def cuda():
    import torch

    return bool(torch.cuda.is_available())


def cuda_bf16():
    import torch

    if not torch.cuda.is_available():
        return False
    check = getattr(torch.cuda, "is_bf16_supported", None)
    if check is not None and not check():
        return False
    a = torch.randn(4, 4, device="cuda", dtype=torch.bfloat16)
    return torch.mm(a, a).dtype == torch.bfloat16


def _cuda_built():
    import torch

    is_built = getattr(getattr(torch.backends, "cuda", None), "is_built", None)
    return bool(is_built()) if is_built is not None else torch.version.cuda is not None


def autocast_bf16_cuda():
    import torch

    if not hasattr(torch, "autocast") or "dtype" not in _params(torch.autocast):
        return False
    # A CPU-only build has no CUDA autocast at all (Debian's 1.13 raises, pip's CPU wheels only warn).
    if not _cuda_built():
        return False
    if torch.cuda.is_available():
        if not cuda_bf16():
            return False
        a = torch.randn(4, 4, device="cuda")
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            return torch.mm(a, a).dtype == torch.bfloat16
    # A CUDA build without a device here: the API must take a bf16 CUDA autocast;
    # whether a GPU has bf16 is "cuda-bf16" on the machine that runs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return True


def checkpoint_non_reentrant():
    import torch
    from torch.utils.checkpoint import checkpoint

    x = torch.arange(3.0, requires_grad=True)
    y = checkpoint(lambda t: (t * t).sum(), x, use_reentrant=False)
    y.backward()
    return bool(torch.equal(x.grad, 2 * x.detach()))


def _adamw_step(device, **kw):
    import torch

    p = torch.zeros(3, device=device, requires_grad=True)
    p.grad = torch.ones(3, device=device)
    torch.optim.AdamW([p], lr=0.1, **kw).step()
    return bool((p.detach() < 0).all())


def adamw_fused():
    import torch

    if "fused" not in _params(torch.optim.AdamW):
        return False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return _adamw_step(device, fused=True)
    except RuntimeError as e:
        # Builds whose fused AdamW is CUDA-only say so on CPU; it works where the run has a GPU.
        if device == "cpu" and "cuda" in str(e).lower():
            return True
        raise


def adamw_foreach():
    import torch

    if "foreach" not in _params(torch.optim.AdamW):
        return False
    return _adamw_step("cpu", foreach=True)


FEATURES = {
    "sdpa": sdpa,
    "sdpa-scale": sdpa_scale,
    "is-causal": is_causal,
    "autocast-bf16-cuda": autocast_bf16_cuda,
    "autocast-bf16-cpu": autocast_bf16_cpu,
    "cuda": cuda,
    "cuda-bf16": cuda_bf16,
    "checkpoint-non-reentrant": checkpoint_non_reentrant,
    "adamw-fused": adamw_fused,
    "adamw-foreach": adamw_foreach,
}


def detect():
    """The capabilities document; a feature whose probe raises is reported as absent."""
    import torch

    features = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, probe in FEATURES.items():
            try:
                features[name] = bool(probe())
            except Exception:  # noqa: BLE001  (any failure means "cannot do it here")
                features[name] = False
    return {"schema": SCHEMA, "torch": str(torch.__version__), "features": features}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    try:
        import torch  # noqa: F401
    except Exception as e:  # noqa: BLE001  (ImportError, or a broken install raising anything)
        print(json.dumps({"schema": SCHEMA, "torch": None, "features": {}, "error": f"cannot import torch in {sys.executable}: {e}"}))
        return 1
    print(json.dumps(detect(), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
