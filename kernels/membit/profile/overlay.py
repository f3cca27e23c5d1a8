"""Running rewritten source in place of a user's file: `--overlay ORIG=REPLACEMENT`.

The script (when it is ORIG) or any module later imported from the file ORIG executes
REPLACEMENT's text instead, compiled under ORIG's file name: frames, tracebacks and report
paths name the user's file, so a remote run and the editor still map onto it. The user's
files are never written.

Line numbers of an overlaid run are those of the rewritten text. Before the report is
written they are mapped back onto ORIG's lines with a line diff of the two texts: lines
outside the rewritten regions map exactly; a line inside one maps to the corresponding line
of the original region (clamped to its end), and those original lines are listed in
`run.overlays[].approximate` so that readers can say the figure is approximate there.
"""

from __future__ import annotations

import builtins
import difflib
import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import os
import sys
import types
from typing import Dict, List, Optional, Tuple


class OverlayError(ValueError):
    """A bad --overlay argument or an overlay that cannot be used; the message says which and why."""


def parse_overlay_arg(text: str) -> Tuple[str, str]:
    """ORIG=REPLACEMENT -> (absolute ORIG, absolute REPLACEMENT).

    Either side may contain '=': the split used is the one where both sides are existing
    files; none or several such splits is an error that says so.
    """
    if "=" not in text:
        raise OverlayError(f"--overlay needs ORIG=REPLACEMENT, got {text!r}")
    cuts = [i for i, ch in enumerate(text) if ch == "="]
    splits = [(text[:i], text[i + 1:]) for i in cuts if 0 < i < len(text) - 1]
    if not splits:
        raise OverlayError(f"--overlay needs ORIG=REPLACEMENT with both files named, got {text!r}")
    both = [(o, r) for o, r in splits if os.path.isfile(o) and os.path.isfile(r)]
    if len(both) > 1:
        raise OverlayError(f"--overlay {text!r} can be read {len(both)} ways ('=' in the file names); "
                           "rename the replacement file so that its name has no '='")
    if not both:
        orig, repl = splits[0] if len(splits) == 1 else max(splits, key=lambda s: os.path.isfile(s[0]))
        if not os.path.isfile(orig):
            raise OverlayError(f"--overlay {text!r}: the original file {orig!r} does not exist")
        raise OverlayError(f"--overlay {text!r}: the replacement file {repl!r} does not exist")
    orig, repl = both[0]
    if not orig.endswith(".py"):
        raise OverlayError(f"--overlay {text!r}: the original {orig!r} is not a .py file; only Python sources can be overlaid")
    return os.path.abspath(orig), os.path.abspath(repl)


class LineMap:
    """Lines of the rewritten text -> lines of the original (1-based), from a line diff."""

    def __init__(self, original: str, rewritten: str):
        a, b = original.splitlines(), rewritten.splitlines()
        self.n_orig = len(a)
        self.to_orig: List[int] = [0] * (len(b) + 1)
        self.approximate: List[Tuple[int, int]] = []
        exact = set()
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            if tag == "equal":
                for k in range(j2 - j1):
                    self.to_orig[j1 + k + 1] = i1 + k + 1
                    exact.add(j1 + k + 1)
                continue
            # A rewritten region: its lines land on the region's original lines, in order, clamped
            # (an insertion lands on the original line after it).
            first, last = i1 + 1, max(i1 + 1, i2)
            last = min(last, max(1, self.n_orig))
            first = min(first, last)
            for k in range(j2 - j1):
                self.to_orig[j1 + k + 1] = min(first + k, last)
            if j2 > j1 or i2 > i1:
                self.approximate.append((first, last))
        self.exact = exact
        self.approximate = _merge(self.approximate)

    def __call__(self, line: int) -> int:
        if 1 <= line < len(self.to_orig):
            return self.to_orig[line] or line
        return line


def _merge(ranges: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class _Loader(importlib.machinery.SourceFileLoader):
    """Loads ORIG as a module, from REPLACEMENT's text; never reads or writes bytecode caches."""

    def __init__(self, fullname, path, text):
        super().__init__(fullname, path)
        self._text = text

    def get_source(self, fullname):
        return self._text

    def get_code(self, fullname):
        # The path the import system found may spell ORIG differently (a link, a relative entry).
        linecache.cache[self.path] = (len(self._text), None, self._text.splitlines(True), self.path)
        return compile(self._text, self.path, "exec", dont_inherit=True)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, overlays: "Overlays"):
        self.overlays = overlays
        self.names = {o.module_name for o in overlays.items}

    def find_spec(self, fullname, path=None, target=None):
        if fullname.rpartition(".")[2] not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.origin:
            return None
        item = self.overlays.by_real.get(os.path.realpath(spec.origin))
        if item is None:
            return None
        item.imported = True
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, loader=_Loader(fullname, spec.origin, item.text),
            submodule_search_locations=spec.submodule_search_locations)


class Item:
    __slots__ = ("orig", "real", "replacement", "text", "original_text", "map", "module_name", "imported", "ran")

    def __init__(self, orig: str, replacement: str):
        self.orig, self.replacement = orig, replacement
        self.real = os.path.realpath(orig)
        try:
            with open(replacement, encoding="utf-8") as f:
                self.text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise OverlayError(f"cannot read the overlay {replacement} for {orig}: {e}")
        try:
            with open(orig, encoding="utf-8") as f:
                self.original_text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise OverlayError(f"cannot read {orig}, which the overlay {replacement} replaces: {e}")
        base = os.path.basename(orig)[:-3]
        self.module_name = os.path.basename(os.path.dirname(orig)) if base == "__init__" else base
        self.map = LineMap(self.original_text, self.text)
        self.imported = False
        self.ran = False

    def check(self) -> None:
        try:
            compile(self.text, self.orig, "exec", dont_inherit=True)
        except SyntaxError as e:
            raise OverlayError(f"the overlay {self.replacement} for {self.orig} does not compile: "
                               f"{e.msg} at line {e.lineno}")


class Overlays:
    """The overlays of one run: installed while the script runs, then used to map report lines back."""

    def __init__(self, pairs: List[Tuple[str, str]]):
        self.items = [Item(o, r) for o, r in pairs]
        self.by_real: Dict[str, Item] = {}
        for it in self.items:
            if it.real in self.by_real:
                raise OverlayError(f"--overlay names {it.orig} twice")
            self.by_real[it.real] = it
        self._finder: Optional[_Finder] = None

    def __bool__(self) -> bool:
        return bool(self.items)

    def for_file(self, path: str) -> Optional[Item]:
        return self.by_real.get(os.path.realpath(path))

    def install(self) -> None:
        for it in self.items:
            it.check()
            # Tracebacks and inspect show the text that ran (mtime None: linecache keeps it).
            linecache.cache[it.orig] = (len(it.text), None, it.text.splitlines(True), it.orig)
            if it.real != it.orig:
                linecache.cache[it.real] = linecache.cache[it.orig]
        self._finder = _Finder(self)
        sys.meta_path.insert(0, self._finder)

    def uninstall(self) -> None:
        if self._finder is not None and self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        self._finder = None

    def run_main(self, item: Item) -> None:
        """Runs the overlaid script as __main__, as runpy.run_path would run the original."""
        item.ran = True
        code = compile(item.text, item.orig, "exec", dont_inherit=True)
        main = types.ModuleType("__main__")
        main.__dict__.update({"__file__": item.orig, "__cached__": None, "__loader__": None, "__package__": "",
                              "__spec__": None, "__builtins__": builtins})
        saved = sys.modules.get("__main__")
        sys.modules["__main__"] = main
        try:
            exec(code, main.__dict__)
        finally:
            if saved is not None:
                sys.modules["__main__"] = saved

    # -- the report ---------------------------------------------------------------------------

    def docs(self, paths) -> List[dict]:
        return [{"file": paths(it.orig), "replacement": it.replacement, "used": it.ran or it.imported,
                 "approximate": [{"first": a, "last": b} for a, b in it.map.approximate]} for it in self.items]

    def remap(self, doc: dict, paths) -> None:
        """Maps every {file, line} of the report from rewritten lines to the original's, merging rows that meet."""
        maps = {paths(it.orig): it.map for it in self.items}

        def walk(v):
            if isinstance(v, dict):
                f, ln = v.get("file"), v.get("line")
                if isinstance(f, str) and isinstance(ln, int) and not isinstance(ln, bool) and f in maps:
                    v["line"] = maps[f](ln)
                for x in v.values():
                    if isinstance(x, (dict, list)):
                        walk(x)
            elif isinstance(v, list):
                for x in v:
                    if isinstance(x, (dict, list)):
                        walk(x)

        walk(doc)
        doc["lines"] = _merge_lines(doc.get("lines") or [])
        doc["sites"] = _merge_sites(doc.get("sites") or [])
        oom = doc.get("oom")
        if isinstance(oom, dict) and oom.get("lines"):
            oom["lines"] = _merge_rows(oom["lines"], ("bytes",), lambda e: -e["bytes"])


def _merge_rows(rows: List[dict], sums, order, merge_extra=None) -> List[dict]:
    out: Dict[tuple, dict] = {}
    for e in rows:
        key = (e["file"], e["line"]) if "kind" not in e else (e["file"], e["line"], e["kind"])
        have = out.get(key)
        if have is None:
            out[key] = e
            continue
        for k in sums:
            have[k] += e[k]
        if merge_extra is not None:
            merge_extra(have, e)
    return sorted(out.values(), key=lambda e: (order(e), e["file"], e["line"]))


def _merge_lines(rows: List[dict]) -> List[dict]:
    from .report import _wildcard

    def extra(have, e):
        mods = [m for m in (have.get("module"), e.get("module")) if m is not None]
        have["module"] = _wildcard(mods) if mods else None
        ops = {o["op"]: dict(o) for o in have["ops"]}
        for o in e["ops"]:
            if o["op"] in ops:
                ops[o["op"]]["bytes"] += o["bytes"]
                ops[o["op"]]["count"] += o["count"]
            else:
                ops[o["op"]] = dict(o)
        have["ops"] = sorted(ops.values(), key=lambda o: -o["bytes"])

    return _merge_rows(rows, ("saved_bytes", "mask_bytes", "at_peak_bytes", "tensors"), lambda e: -e["saved_bytes"], extra)


def _merge_sites(rows: List[dict]) -> List[dict]:
    from .report import _wildcard

    def extra(have, e):
        mods = [m for m in (have.get("module"), e.get("module")) if m is not None]
        have["module"] = _wildcard(mods) if mods else None

    return _merge_rows(rows, ("elements", "mask_bytes", "saving_if_packed", "calls"), lambda e: -e["mask_bytes"], extra)
