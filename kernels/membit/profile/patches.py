"""Everything the tracker installs into torch for a run, and takes back out at its end.

  * global module forward pre/post hooks (Tracker.module_pre / module_post);
  * optimizer step pre/post hooks (wrappers of each optimizer's step on torch < 2.0);
  * nn.Module.__init__, to note the user line that built each module;
  * F.dropout and F.scaled_dot_product_attention, to open a dropout site around the call;
  * torch.autograd.backward, the exact start of a backward pass;
  * saved-tensor hooks around the whole run (Tracker.pack / unpack).

Inside code that torch.compile traces, every hook and wrapper returns at once: dynamo would
inline them, and one that touched the tracker's module stack broke its side-effect tracking.
"""

from __future__ import annotations

import importlib
import inspect
import sys

import torch

from .compiled import is_compiling
from .saved import from_softmax


class TorchPatches:
    def __init__(self):
        self._handles: list = []
        # (owner, attribute, original, ours), in the order they were replaced.
        self._restore: list = []
        self._saved_hooks = None
        self._store = None

    def install(self, tracker) -> None:
        from torch.nn.modules import module as nn_module

        kwargs = {}
        try:
            if "always_call" in inspect.signature(nn_module.register_module_forward_hook).parameters:
                kwargs["always_call"] = True
        except (TypeError, ValueError):
            pass
        self._handles.append(nn_module.register_module_forward_pre_hook(tracker.module_pre))
        self._handles.append(nn_module.register_module_forward_hook(tracker.module_post, **kwargs))
        self._install_optimizer_hooks(tracker)
        self._patch_module_init(tracker)
        self._patch_functions(tracker)
        self._store = tracker.saved
        self._store.attach()
        self._saved_hooks = torch.autograd.graph.saved_tensors_hooks(tracker.pack, tracker.unpack)
        self._saved_hooks.__enter__()

    def uninstall(self) -> None:
        if self._saved_hooks is not None:
            try:
                self._saved_hooks.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - a script that left its own hooks pushed
                pass
            self._saved_hooks = None
        for h in self._handles:
            try:
                h.remove()
            except Exception:  # noqa: BLE001
                pass
        self._handles.clear()
        for owner, name, original, ours in reversed(self._restore):
            # Put the original back only where nobody replaced ours in the meantime.
            if getattr(owner, name, None) is ours:
                setattr(owner, name, original)
        self._restore.clear()
        if self._store is not None:
            self._store.detach()
            self._store = None

    def _replace(self, owner, name, new):
        original = getattr(owner, name)
        setattr(owner, name, new)
        self._restore.append((owner, name, original, new))
        return original

    def _install_optimizer_hooks(self, tracker) -> None:
        opt_mod = importlib.import_module("torch.optim.optimizer")
        pre = getattr(opt_mod, "register_optimizer_step_pre_hook", None)
        post = getattr(opt_mod, "register_optimizer_step_post_hook", None)
        if pre is not None and post is not None:
            self._handles.append(pre(lambda opt, args, kwargs: tracker.optimizer_pre(opt)))
            self._handles.append(post(lambda opt, args, kwargs: tracker.optimizer_post(opt)))
            return
        # torch < 2.0: wrap each optimizer's bound step when it is constructed.
        original_init = torch.optim.Optimizer.__init__

        def init(opt, *args, **kwargs):
            original_init(opt, *args, **kwargs)
            step = opt.step

            def stepped(*a, **k):
                tracker.optimizer_pre(opt)
                out = step(*a, **k)
                tracker.optimizer_post(opt)
                return out

            opt.step = stepped

        self._replace(torch.optim.Optimizer, "__init__", init)

    def _patch_module_init(self, tracker) -> None:
        original_init = torch.nn.Module.__init__

        def init(module, *args, **kwargs):
            original_init(module, *args, **kwargs)
            try:
                tracker.note_creation(module, sys._getframe(1))
            except Exception:  # noqa: BLE001 - attribution is best effort, construction is not
                pass

        self._replace(torch.nn.Module, "__init__", init)

    def _patch_functions(self, tracker) -> None:
        F = torch.nn.functional
        original_dropout = F.dropout

        def dropout(input, p=0.5, training=True, inplace=False):
            if is_compiling():
                return original_dropout(input, p, training, inplace)
            if not training or p == 0.0 or tracker.in_dropout is not None or not torch.is_grad_enabled() \
                    or not isinstance(input, torch.Tensor) or not input.requires_grad or tracker.replaying:
                return original_dropout(input, p, training, inplace)
            frame = tracker.code.user_frames(sys._getframe(1), limit=1)[0]
            route = tracker.hooks.route_dropout
            routed = route(frame) if route is not None else None
            kind = "attn-dropout" if from_softmax(input) else "dropout-call"
            tracker.open_site(kind, frame, tracker.innermost_module(), input.numel())
            try:
                if routed is not None:
                    return routed(input, p, training, inplace)
                return original_dropout(input, p, training, inplace)
            finally:
                tracker.in_dropout = None

        dropout.__wrapped__ = original_dropout
        dropout.__doc__ = original_dropout.__doc__
        self._replace(F, "dropout", dropout)

        sdpa = getattr(F, "scaled_dot_product_attention", None)
        if sdpa is not None:
            def scaled_dot_product_attention(query, key, value, *args, **kwargs):
                if is_compiling():
                    return sdpa(query, key, value, *args, **kwargs)
                if not tracker.replaying:
                    tracker.sdpa_calls += 1
                p = kwargs.get("dropout_p", args[1] if len(args) > 1 else 0.0)
                if not p or tracker.in_dropout is not None or not torch.is_grad_enabled() \
                        or not isinstance(query, torch.Tensor) or not query.requires_grad or tracker.replaying:
                    return sdpa(query, key, value, *args, **kwargs)
                frame = tracker.code.user_frames(sys._getframe(1), limit=1)[0]
                elements = (query.numel() // max(1, query.shape[-1])) * key.shape[-2]
                tracker.open_site("fused-attn-dropout", frame, tracker.innermost_module(), int(elements), fused=True)
                try:
                    return sdpa(query, key, value, *args, **kwargs)
                finally:
                    tracker.in_dropout = None

            scaled_dot_product_attention.__wrapped__ = sdpa
            scaled_dot_product_attention.__doc__ = sdpa.__doc__
            self._replace(F, "scaled_dot_product_attention", scaled_dot_product_attention)

        # Tensor.backward calls torch.autograd.backward by attribute: the exact backward start.
        original_backward = torch.autograd.backward

        def backward(*args, **kwargs):
            if is_compiling():
                return original_backward(*args, **kwargs)
            tracker.on_backward_start()
            tracker.backward_depth += 1
            try:
                return original_backward(*args, **kwargs)
            finally:
                tracker.backward_depth -= 1

        backward.__wrapped__ = original_backward
        self._replace(torch.autograd, "backward", backward)
