"""Variants as combinable levers, and the three advisor levers the harness applies at run time.

A variant is `baseline` or a `+`-joined set of levers:

    packed, recompute   dropout masks stored with 1 bit per element / none (membit.patch); exclusive
    sparse24            FFN linears as 2:4 sparse (membit.patch)
    sdpa                fused attention: HF models switched to "sdpa"; other models run rewritten
                        source given with --overlay (the editor's rewriter makes it)
    checkpoint          activation checkpointing of the model's blocks
    bf16                the model's forward under torch.autocast(dtype=torch.bfloat16)
    compile             the model's forward through torch.compile (backend: MEMBIT_COMPILE_BACKEND,
                        default inductor); the first step runs eager, the next ones compiled

Names are canonical when the levers appear in the order above (`packed+sparse24`,
`sdpa+checkpoint+bf16`); any order is accepted and canonicalised. Every lever is applied to
the model at its first forward, and says how it was applied (`run.levers` in the report).
"""

from __future__ import annotations

import inspect
from typing import Iterable, List, Optional, Tuple

import torch

LEVERS = ("packed", "recompute", "sparse24", "sdpa", "checkpoint", "bf16", "compile")
ADVISOR_LEVERS = ("sdpa", "checkpoint", "bf16")
EXCLUSIVE = (("packed", "recompute"),)


class VariantError(ValueError):
    """A variant name that is not baseline or a valid set of levers."""


class LeverError(Exception):
    """A lever cannot be applied to this model or on this machine; the message says why and what to do."""


def parse_variant(text: str) -> Tuple[str, ...]:
    """The variant's levers in canonical order; () for baseline. Raises VariantError with the fix."""
    name = (text or "").strip()
    if name == "baseline":
        return ()
    parts = name.split("+")
    if not name or any(not p for p in parts):
        raise VariantError(f"bad variant {text!r}: write 'baseline' or levers joined by '+' "
                           f"(from {', '.join(LEVERS)}), e.g. sdpa+checkpoint+bf16")
    unknown = [p for p in parts if p not in LEVERS]
    if unknown:
        hint = " ('baseline' stands alone)" if "baseline" in unknown else ""
        raise VariantError(f"unknown lever(s) {', '.join(repr(u) for u in unknown)} in variant {text!r}{hint}; "
                           f"levers are {', '.join(LEVERS)}")
    dup = sorted({p for p in parts if parts.count(p) > 1})
    if dup:
        raise VariantError(f"variant {text!r} names {', '.join(dup)} twice")
    for a, b in EXCLUSIVE:
        if a in parts and b in parts:
            raise VariantError(f"variant {text!r}: {a} and {b} are two ways to store the same dropout masks; pick one")
    return tuple(lv for lv in LEVERS if lv in parts)


def variant_name(levers: Iterable[str]) -> str:
    chosen = set(levers)
    return "+".join(lv for lv in LEVERS if lv in chosen) or "baseline"


def canonical(text: str) -> str:
    return variant_name(parse_variant(text))


def patch_modes(levers: Tuple[str, ...]) -> Tuple[Optional[str], Optional[str]]:
    """(dropout, ffn) as membit.patch takes them."""
    dropout = "packed" if "packed" in levers else "recompute" if "recompute" in levers else None
    return dropout, ("2:4" if "sparse24" in levers else None)


# -- HF models ------------------------------------------------------------------------------

def _hf_configs(config) -> List[object]:
    """A HF config and its sub-configs (text/vision/... of composite models), each once."""
    out, todo = [], [config]
    while todo:
        c = todo.pop()
        if c is None or any(c is o for o in out):
            continue
        out.append(c)
        subs = getattr(c, "sub_configs", None)
        for key in (subs.keys() if isinstance(subs, dict) else ()):
            todo.append(getattr(c, key, None))
    return out


def is_hf_model(root) -> bool:
    config = getattr(root, "config", None)
    return config is not None and (callable(getattr(root, "set_attn_implementation", None))
                                   or hasattr(config, "_attn_implementation"))


def sdpa_available() -> Optional[str]:
    """None when this torch has a working scaled_dot_product_attention, else why not."""
    from membit import capabilities

    try:
        ok = capabilities.sdpa()
    except Exception as e:  # noqa: BLE001 - a broken build is a missing feature
        return f"torch.nn.functional.scaled_dot_product_attention failed here: {type(e).__name__}: {e}"
    if not ok:
        return f"torch {torch.__version__} has no torch.nn.functional.scaled_dot_product_attention (needs torch 2.0 or later)"
    return None


def switch_hf_sdpa(root) -> str:
    """Switches a HF model (and its sub-models) to SDPA attention; returns how."""
    name = type(root).__name__
    setter = getattr(root, "set_attn_implementation", None)
    if callable(setter):
        try:
            setter("sdpa")
        except (ValueError, ImportError, NotImplementedError, TypeError) as e:
            raise LeverError(f"sdpa: {name}.set_attn_implementation('sdpa') refused: {e}")
        return f"{name}.set_attn_implementation('sdpa')"
    configs = _hf_configs(root.config)
    # Sub-models built with their own config object (not one of the root's sub-configs).
    for m in root.modules():
        c = getattr(m, "config", None)
        if c is not None and hasattr(c, "_attn_implementation") and not any(c is o for o in configs):
            configs.append(c)
    for c in configs:
        try:
            c._attn_implementation = "sdpa"
        except (AttributeError, ValueError) as e:
            raise LeverError(f"sdpa: could not set _attn_implementation on {type(c).__name__}: {e}")
    return f"config._attn_implementation = 'sdpa' on {len(configs)} config(s) of {name}"


# -- checkpointing --------------------------------------------------------------------------

def _non_reentrant_checkpoint():
    from torch.utils import checkpoint as ckpt

    fn = getattr(ckpt, "checkpoint", None)
    try:
        params = inspect.signature(fn).parameters if fn is not None else {}
    except (TypeError, ValueError):
        params = {}
    if "use_reentrant" not in params:
        raise LeverError(f"checkpoint: torch {torch.__version__}'s torch.utils.checkpoint has no use_reentrant=False "
                         "(non-reentrant checkpointing, torch 1.11 or later), which the harness needs to keep its "
                         "hooks working; upgrade torch")
    return fn


def block_list(root) -> Optional[Tuple[str, torch.nn.ModuleList]]:
    """The model's largest nn.ModuleList of >= 2 modules of one class with parameters (its blocks)."""
    best = None
    for name, m in root.named_modules():
        if not isinstance(m, torch.nn.ModuleList) or len(m) < 2:
            continue
        if len({type(b) for b in m}) != 1:
            continue
        size = sum(p.numel() for p in m.parameters())
        if size == 0:
            continue
        key = (size, len(m))
        if best is None or key > best[0]:
            best = (key, name, m)
    return (best[1], best[2]) if best else None


def _checkpointed(block, fn):
    original = block.forward

    def forward(*args, **kwargs):
        # Only while training with grad: eval and no_grad forwards keep nothing to recompute.
        if block.training and torch.is_grad_enabled():
            return fn(original, *args, use_reentrant=False, **kwargs)
        return original(*args, **kwargs)

    forward.__wrapped__ = original
    return forward


def apply_compile(root) -> str:
    """Compiles the model's forward in place (the instance's `forward`); returns how.

    Only `forward` is wrapped, not the module's call: its hooks (the harness's root hooks
    among them) keep running eagerly around the compiled forward. The call in progress
    already holds the eager forward, so the first step runs eager and later ones compiled.
    """
    import os

    fn = getattr(torch, "compile", None)
    if fn is None:
        raise LeverError(f"compile: this torch ({torch.__version__}) has no torch.compile (2.0 or later)")
    backend = os.environ.get("MEMBIT_COMPILE_BACKEND", "") or "inductor"
    if getattr(root, "_membit_compiled", False):
        return f"{type(root).__name__}.forward already compiled"
    root.forward = fn(root.forward, backend=backend)
    root._membit_compiled = True
    return f"torch.compile({type(root).__name__}.forward, backend={backend!r}); step 1 ran eager"


def apply_checkpoint(root) -> str:
    """Checkpoints the model's blocks (HF: gradient_checkpointing_enable); returns how."""
    name = type(root).__name__
    enable = getattr(root, "gradient_checkpointing_enable", None)
    if getattr(root, "supports_gradient_checkpointing", False) and callable(enable):
        try:
            params = inspect.signature(enable).parameters
        except (TypeError, ValueError):
            params = {}
        try:
            if "gradient_checkpointing_kwargs" in params:
                enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                return f"{name}.gradient_checkpointing_enable(use_reentrant=False)"
            enable()
        except (ValueError, TypeError, NotImplementedError) as e:
            raise LeverError(f"checkpoint: {name}.gradient_checkpointing_enable() refused: {e}")
        return f"{name}.gradient_checkpointing_enable() (this transformers version takes no use_reentrant)"
    fn = _non_reentrant_checkpoint()
    found = block_list(root)
    if found is None:
        raise LeverError(f"checkpoint: {name} has no nn.ModuleList of 2 or more blocks of one class with parameters "
                         "to checkpoint; checkpoint its blocks with the code action or torch.utils.checkpoint by hand")
    path, blocks = found
    for block in blocks:
        block.forward = _checkpointed(block, fn)
    return (f"torch.utils.checkpoint (use_reentrant=False) on {path or name} "
            f"({len(blocks)} {type(blocks[0]).__name__} blocks)")


# -- bf16 autocast --------------------------------------------------------------------------

def bf16_autocast(device: torch.device, model_name: str):
    """(a factory of autocast contexts, how) for the model's device; LeverError where bf16 autocast cannot run."""
    from membit import capabilities

    kind = device.type
    if not hasattr(torch, "autocast"):
        raise LeverError(f"bf16: torch {torch.__version__} has no torch.autocast; upgrade torch")
    if kind == "cuda":
        if not capabilities.cuda_bf16():
            name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "this GPU"
            raise LeverError(f"bf16: {name} does not support bfloat16 (needs compute capability 8.0 or later, "
                             "e.g. A100, H100); try the other levers")
        if not capabilities.autocast_bf16_cuda():
            raise LeverError(f"bf16: torch {torch.__version__} cannot autocast to bfloat16 on CUDA")
    elif kind == "cpu":
        if not capabilities.autocast_bf16_cpu():
            raise LeverError(f"bf16: torch {torch.__version__} has no CPU bf16 autocast; run on a GPU or upgrade torch")
    else:
        raise LeverError(f"bf16: the model runs on {kind}, where Membit's harness does not apply autocast; "
                         "run on CUDA or CPU")

    def factory():
        return torch.autocast(device_type=kind, dtype=torch.bfloat16)

    return factory, f"torch.autocast('{kind}', dtype=torch.bfloat16) around {model_name}.forward"
