"""Which Python frames are the user's, and how report paths are written.

"User code" is everything that is not PyTorch, the standard library, membit itself or a
wrapper library whose frames sit between a model and the ops it calls (accelerate's hooks,
triton's launchers). A model library such as transformers counts as user code on purpose:
its modeling files are where the memory of an HF model is held, and the editor can open them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from typing import Dict, List, Optional, Tuple

# A frame as the report stores it: (absolute file, line, function name).
FrameT = Tuple[str, int, str]

_WRAPPER_PACKAGES = ("torch", "functorch", "triton", "accelerate", "membit")


def _package_dir(name: str) -> Optional[str]:
    # find_spec on a top-level name locates the package without importing it.
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.realpath(list(spec.submodule_search_locations)[0]) + os.sep


def _stdlib_dirs() -> List[str]:
    dirs = set()
    for key in ("stdlib", "platstdlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            dirs.add(os.path.realpath(p) + os.sep)
    return sorted(dirs)


class CodeFilter:
    """Classifies code files as library or user code; answers are cached per file name."""

    def __init__(self, extra_library_dirs: Tuple[str, ...] = ()):
        self.library_dirs = [d for d in (_package_dir(n) for n in _WRAPPER_PACKAGES) if d]
        self.library_dirs += [os.path.realpath(d) + os.sep for d in extra_library_dirs]
        self.stdlib_dirs = _stdlib_dirs()
        self._cache: Dict[str, bool] = {}

    def is_library(self, filename: str) -> bool:
        hit = self._cache.get(filename)
        if hit is None:
            hit = self._cache[filename] = self._classify(filename)
        return hit

    def _classify(self, filename: str) -> bool:
        if not filename or filename.startswith("<"):
            # <frozen runpy>, <string>, <built-in>: nothing the editor could open.
            return True
        path = os.path.realpath(filename)
        if any(path.startswith(d) for d in self.library_dirs):
            return True
        for d in self.stdlib_dirs:
            # site-packages lives under the stdlib folder, and third-party models are user code.
            if path.startswith(d):
                rest = path[len(d):]
                return not (rest.startswith("site-packages" + os.sep) or rest.startswith("dist-packages" + os.sep))
        return False

    def user_frames(self, frame, limit: int = 3) -> List[FrameT]:
        """Up to `limit` user frames, innermost first, starting at `frame`.

        Falls back to the innermost frame of any kind, so every saved tensor has a line.
        """
        out: List[FrameT] = []
        f = frame
        first = frame
        is_library = self.is_library
        while f is not None and len(out) < limit:
            code = f.f_code
            if not is_library(code.co_filename):
                out.append((code.co_filename, f.f_lineno, code.co_name))
            f = f.f_back
        if not out and first is not None:
            out.append((first.f_code.co_filename, first.f_lineno, first.f_code.co_name))
        return out


class PathMapper:
    """Writes paths relative to the run's root folder, posix-style; others stay absolute."""

    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        self._cache: Dict[str, str] = {}

    def __call__(self, filename: Optional[str]) -> Optional[str]:
        if filename is None:
            return None
        hit = self._cache.get(filename)
        if hit is not None:
            return hit
        if filename.startswith("<"):
            out = filename
        else:
            path = os.path.realpath(filename)
            try:
                rel = os.path.relpath(path, self.root)
            except ValueError:  # another drive on Windows
                rel = None
            if rel is not None and rel != os.pardir and not rel.startswith(os.pardir + os.sep):
                out = rel.replace(os.sep, "/")
            else:
                out = path.replace(os.sep, "/")
        self._cache[filename] = out
        return out


def frame_dict(frame: FrameT, paths: PathMapper) -> dict:
    return {"file": paths(frame[0]), "line": int(frame[1]), "name": frame[2]}


def frames_from_allocator(frames: list, code: CodeFilter, paths: PathMapper, limit: int = 6) -> List[dict]:
    """User frames (innermost first) from an allocator trace entry's stack.

    The allocator lists Python frames innermost first; C++ frames (no .py file) are dropped.
    When no frame is user code, the innermost Python frames are kept so the entry still says where.
    """
    py = [f for f in frames or () if str(f.get("filename", "")).endswith(".py")]
    user = [f for f in py if not code.is_library(f["filename"])]
    chosen = (user or py)[:limit] if user else py[:min(3, limit)]
    return [{"file": paths(f["filename"]), "line": int(f.get("line", 0)), "name": str(f.get("name", ""))} for f in chosen]


def current_user_frame(code: CodeFilter, depth: int = 2) -> Optional[FrameT]:
    frames = code.user_frames(sys._getframe(depth), limit=1)
    return frames[0] if frames else None
