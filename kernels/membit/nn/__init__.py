"""Drop-in modules (`PackedDropout`) and their functional forms (`membit.nn.functional`)."""

from . import functional  # noqa: F401
from .dropout import PackedDropout

__all__ = ["PackedDropout", "functional"]
