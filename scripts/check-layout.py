#!/usr/bin/env python3
"""The crate's layout rules, checked (`make lint`).

1. Rooms with one-way doors: within one folder under `src/`, no two modules (files, or
   sub-folders taken whole) import each other, directly or around a circle. An import is any
   `crate::...` or `super::...` path in the code before the file's `#[cfg(test)]` module; a
   name a folder's `mod.rs` re-exports (`pub use conn::Conn`) counts as an import of the file
   it comes from, since that is where a reader has to go.
2. No file under `src/` is over MAX_LINES lines, leaving out its `#[cfg(test)]` modules.

Prints every circle and every long file, and exits 1 when there is one. `--graph` also prints
each folder's edges.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MAX_LINES = 900
SRC = Path(__file__).resolve().parent.parent / "src"
ROOTS = {"lib.rs", "main.rs", "mod.rs"}

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH_IN_CODE = re.compile(rf"\b(?:crate|super)(?:::(?:{IDENT}|\*))+")


def strip_comments_and_strings(text: str) -> str:
    """Removes comments and string literals, which may mention paths that are not imports."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r'r#+".*?"#+', '""', text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text, flags=re.S)
    return text


def code_before_tests(path: Path) -> tuple[str, int]:
    """The file's text without its `#[cfg(test)]` modules, and that text's line count.

    A test module is usually last, but a `#[cfg(test)]` helper module may sit between items:
    only the module itself (to its closing brace) is left out, not what follows it.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    kept: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]":
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and re.match(r"\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{", lines[j]):
                depth = 0
                k = j
                while k < len(lines):
                    code = strip_comments_and_strings(lines[k])
                    depth += code.count("{") - code.count("}")
                    k += 1
                    if depth <= 0:
                        break
                i = k
                continue
        kept.append(lines[i])
        i += 1
    return "\n".join(kept), len(kept)


def module_of(path: Path) -> tuple[str, ...]:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


def expand_use_tree(tree: str) -> list[str]:
    """`a::{b::C, d}` -> [`a::b::C`, `a::d`]."""
    tree = re.sub(r"\s+", "", tree)
    tree = re.sub(r"\bas\w+", "", tree)
    if "{" not in tree:
        return [tree]
    i = tree.index("{")
    prefix, body = tree[:i], tree[i + 1 : tree.rindex("}")]
    parts, depth, start = [], 0, 0
    for j, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:j])
            start = j + 1
    parts.append(body[start:])
    out = []
    for part in parts:
        if not part:
            continue
        if part == "self":
            out.append(prefix.rstrip(":"))
        else:
            out.extend(expand_use_tree(prefix + part))
    return out


def paths_in(code: str) -> list[str]:
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        paths.extend(expand_use_tree(m.group(1)))
    code_without_uses = re.sub(r"\buse\s+[^;]+;", " ", code)
    paths.extend(m.group(0) for m in PATH_IN_CODE.finditer(code_without_uses))
    return [p for p in paths if p.startswith(("crate::", "super::"))]


def main() -> int:
    files = sorted(p for p in SRC.rglob("*.rs") if p.name != "main.rs")
    modules = {module_of(p): p for p in files}
    children: dict[tuple[str, ...], set[str]] = {}
    for m in modules:
        if m:
            children.setdefault(m[:-1], set()).add(m[-1])

    # Re-exports: (folder, name) -> the child module the name comes from.
    reexports: dict[tuple[tuple[str, ...], str], str] = {}
    for m, p in modules.items():
        if p.name not in ROOTS:
            continue
        code, _ = code_before_tests(p)
        for use in re.finditer(
            r"\bpub(?:\(crate\))?\s+use\s+([^;]+);", strip_comments_and_strings(code)
        ):
            for path in expand_use_tree(use.group(1)):
                segs = path.split("::")
                if segs[0] in children.get(m, ()):
                    reexports[(m, segs[-1])] = segs[0]

    def resolve(origin: tuple[str, ...], path: str) -> tuple[str, ...] | None:
        segs = path.split("::")
        if segs[0] == "crate":
            base: tuple[str, ...] = ()
            segs = segs[1:]
        else:
            base = origin
            while segs and segs[0] == "super":
                base = base[:-1]
                segs = segs[1:]
        target = base
        for s in segs:
            if s in children.get(target, ()):
                target = target + (s,)
            elif (target, s) in reexports:
                target = target + (reexports[(target, s)],)
                break
            else:
                break
        return target

    edges: dict[tuple[str, ...], set[tuple[str, str]]] = {}
    failures = []
    for m, p in modules.items():
        code, length = code_before_tests(p)
        if length > MAX_LINES:
            failures.append(
                f"{p.relative_to(SRC.parent)}: {length} lines before its tests "
                f"(at most {MAX_LINES})"
            )
        # A file's module: `mod.rs` stands for its folder, one level up.
        for path in paths_in(strip_comments_and_strings(code)):
            target = resolve(m, path)
            if target is None:
                continue
            # At every folder both sit in, the two children they fall under.
            k = 0
            while k < len(m) and k < len(target) and m[k] == target[k]:
                k += 1
            if k < len(m) and k < len(target):
                folder = m[:k]
                edges.setdefault(folder, set()).add((m[k], target[k]))

    for folder in sorted(edges):
        graph: dict[str, set[str]] = {}
        for a, b in edges[folder]:
            graph.setdefault(a, set()).add(b)
        if "--graph" in sys.argv:
            name = "src/" + "/".join(folder)
            for a in sorted(graph):
                print(f"{name}: {a} -> {', '.join(sorted(graph[a]))}")
        for cycle in circles(graph):
            where = "src/" + "/".join(folder) + ("/" if folder else "")
            failures.append(f"{where}: import circle {' -> '.join(cycle + [cycle[0]])}")

    for f in failures:
        print(f)
    if not failures:
        print("layout: no import circles, no file over", MAX_LINES, "lines before its tests")
    return 1 if failures else 0


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


if __name__ == "__main__":
    sys.exit(main())
