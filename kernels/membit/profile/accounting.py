"""Parameters, buffers, gradients and optimizer state: what the run holds across steps.

Also how their bytes are counted, for the tracker and the report alike: a tensor costs this
process its local shard (DTensor), and tensors that share a storage count once.

The allocator's trace names blocks by address only. `identities` are the evidence that lets
the report name them: at chosen moments (profiling start, each optimizer step) the address,
size and category of params, buffers, grads and state tensors are noted with the time.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch

# Identities kept this many entries per address: grads get a new block every step
# (zero_grad(set_to_none)), and only the recent ones can match the allocator's peak.
_IDENTITIES_PER_ADDRESS = 16


def storage_of(t):
    # untyped_storage() (torch >= 2.0) avoids TypedStorage's deprecation warning.
    fn = getattr(t, "untyped_storage", None)
    return fn() if fn is not None else t.storage()


def local_tensor(t):
    """The tensor this process holds: a DTensor's (FSDP2, tensor parallel) local shard, else t itself.

    A DTensor is a wrapper with no storage of its own, and its numel() is the global size: each
    rank's memory is its local shard's.
    """
    local = getattr(t, "_local_tensor", None)
    return local if isinstance(local, torch.Tensor) else t


def tensor_bytes(t) -> int:
    """Bytes of the elements this process holds (a DTensor's local shard)."""
    t = local_tensor(t)
    return t.numel() * t.element_size()


def storage_key(t) -> Tuple[int, int]:
    """(data pointer, bytes) of a tensor's storage (a DTensor's local shard's); (0, 0) when it has none."""
    t = local_tensor(t)
    try:
        st = storage_of(t)
        return st.data_ptr(), st.nbytes()
    except Exception:  # noqa: BLE001 - sparse, nested, meta tensors have no plain storage
        return 0, 0


def unique_storage_bytes(tensors: Iterable[torch.Tensor], device_type: Optional[str] = None) -> int:
    """Bytes of the distinct storages behind `tensors` (only those on `device_type`, when given)."""
    seen, total = set(), 0
    for t in tensors:
        if device_type is not None and t.device.type != device_type:
            continue
        ptr, n = storage_key(t)
        if ptr and ptr not in seen:
            seen.add(ptr)
            total += n
    return total



def _once(*sources) -> Iterator:
    """Each object of the sources once, by identity (shared or tied tensors appear in several)."""
    seen = set()
    for source in sources:
        for t in source:
            if id(t) not in seen:
                seen.add(id(t))
                yield t

class ParamAccounting:
    """The run's models and optimizers, and the persistent tensors reached through them."""

    def __init__(self, clock: Callable[[], int]):
        # The tracker's clock, read at each call: membit.predict swaps in a logical one.
        self._clock = clock
        self.roots: List[torch.nn.Module] = []
        self._root_ids = set()
        self.optimizers: list = []
        # The optimizer whose step ends a training step (the first one seen to step).
        self.primary_opt = None
        self.identities: Dict[int, list] = {}  # ptr -> [allocator.Identity], profiling window only
        self._state_sizes: Dict[int, int] = {}

    def add_root(self, module: torch.nn.Module) -> bool:
        """Notes a top-level model; False if it was already known."""
        if id(module) in self._root_ids:
            return False
        self._root_ids.add(id(module))
        self.roots.append(module)
        return True

    def add_optimizer(self, opt) -> None:
        if opt not in self.optimizers:
            self.optimizers.append(opt)

    # -- what the run holds -----------------------------------------------------------------

    def params(self) -> Iterator[torch.nn.Parameter]:
        """Every parameter once: the models', then those only an optimizer knows of."""
        return _once(*(root.parameters() for root in self.roots),
                     *(group["params"] for opt in self.optimizers for group in opt.param_groups))

    def buffers(self) -> Iterator[torch.Tensor]:
        return _once(*(root.buffers() for root in self.roots))

    def persistent_tensors(self, state_only: bool = False) -> Iterator[tuple]:
        """(tensor, category) for every buffer, param, grad and optimizer-state tensor (state alone if asked)."""
        if not state_only:
            for b in self.buffers():
                yield b, "buffer"
            for p in self.params():
                yield p, "param"
                if p.grad is not None:
                    yield p.grad, "grad"
        for v in self.state_tensors():
            yield v, "optimizer"

    def state_tensors(self) -> Iterator[torch.Tensor]:
        seen = set()
        for opt in self.optimizers:
            for st in opt.state.values():
                if not isinstance(st, dict):
                    continue
                for v in st.values():
                    if isinstance(v, torch.Tensor) and id(v) not in seen:
                        seen.add(id(v))
                        yield v

    def optimizer_state_bytes(self, device_type: Optional[str] = None) -> int:
        return unique_storage_bytes(self.state_tensors(), device_type)

    def grad_bytes(self) -> Dict[int, int]:
        """id(param) -> bytes of its grad, for the params that have one now."""
        grads = {}
        for p in self.params():
            g = p.grad
            if g is not None:
                grads[id(p)] = tensor_bytes(g)
        return grads

    def persistent_ptrs(self) -> Dict[int, str]:
        """Storage address -> "param" | "buffer": what autograd saves there is not an activation."""
        pers = {}
        for b in self.buffers():
            ptr, _ = storage_key(b)
            if ptr:
                pers[ptr] = "buffer"
        for p in self.params():
            ptr, _ = storage_key(p)
            if ptr:
                pers[ptr] = "param"
        return pers

    # -- at an optimizer step ---------------------------------------------------------------

    def collect_grads(self, opt, into: Dict[int, int], note_identities: bool) -> None:
        """Adds the grads `opt` is about to apply to `into` (and notes their addresses, if asked)."""
        note = self._grad_note() if note_identities else None
        for group in opt.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is not None:
                    ptr, n = storage_key(g)
                    # The grad's own elements: FSDP2's reduce-scatter output and DDP's bucket views
                    # put many grads in one storage, which would otherwise count once per grad.
                    into[id(p)] = tensor_bytes(g)
                    if note is not None and ptr:
                        note(ptr, n)

    def _grad_note(self):
        """A function noting that an address holds a grad now (grads get new blocks each step)."""
        from .allocator import Identity

        t = self._clock()
        idents = self.identities

        def note(ptr, n):
            lst = idents.setdefault(ptr, [])
            lst.append(Identity(t, "grad", n))
            if len(lst) > _IDENTITIES_PER_ADDRESS:
                del lst[0]

        return note

    def note_new_state(self, opt) -> None:
        """Notes the optimizer state's addresses again when `opt` holds state for a different
        number of params than last time (its first step allocates it)."""
        if self._state_sizes.get(id(opt)) != len(opt.state):
            self._state_sizes[id(opt)] = len(opt.state)
            self._note(state_only=True)

    def note_all(self) -> None:
        """Notes where every param, buffer, grad and state tensor is now."""
        self._note(state_only=False)

    def _note(self, state_only: bool) -> None:
        from .allocator import Identity

        t = self._clock()
        idents = self.identities

        def note(tensor, cat):
            ptr, n = storage_key(tensor)
            if not ptr:
                return
            lst = idents.setdefault(ptr, [])
            if cat != "grad" and lst and lst[-1].category == cat and lst[-1].nbytes == n:
                return  # params, buffers and state keep their block: one sighting is enough
            lst.append(Identity(t, cat, n))
            if len(lst) > _IDENTITIES_PER_ADDRESS:
                del lst[0]

        for tensor, cat in self.persistent_tensors(state_only):
            note(tensor, cat)
