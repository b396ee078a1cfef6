#!/usr/bin/env python3
"""Import circles between the modules of a Rust crate.

Usage: scripts/import-cycles.py SRC_DIR [SRC_DIR ...]   (e.g. tests/src)

Every file is one module (lib.rs/main.rs the root, foo/mod.rs is foo). A
path `crate::a::b::...` or `super::...` named anywhere in a file's code
(a `use` or inline) is an edge from that file's module to the deepest
module the path names. Edges from a module to its own descendants (the
`mod` declarations and what a parent re-exports from them) are not
counted: a parent that knows its children is the tree, not a circle.

Prints every strongly connected component of more than one module, once at
file level and once at the crate's top level (`lab::x` -> `lab`). Exits 1
when there is any.
"""

import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments(text):
    """Removes // and /* */ comments and string literals' contents."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            out.append('""')
            i = n if end < 0 else end + 1 + len(hashes)
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4] + "  "):
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            out.append("' '")
            i += len(m.group(0)) if m else 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def modules(src):
    """{module path tuple: file} for one crate's source folder."""
    mods = {}
    for root, _dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        parts = [] if rel == "." else rel.split(os.sep)
        if parts and parts[0] == "bin":
            continue  # binaries are crates of their own
        for f in files:
            if not f.endswith(".rs"):
                continue
            name = f[:-3]
            if not parts and name in ("lib", "main"):
                path = ()
            elif name == "mod":
                path = tuple(parts)
            else:
                path = tuple(parts) + (name,)
            mods[path] = os.path.join(root, f)
    return mods


def expand_use(tree):
    """`a::{b, c::d}` -> [a::b, a::c::d] (segments only, aliases dropped)."""
    tree = re.sub(r"\s+", "", tree)
    depth, start, parts = 0, 0, []
    m = tree.find("{")
    if m < 0:
        return [re.sub(r"as" + IDENT + "$", "", tree)] if tree else []
    prefix, body = tree[:m], tree[m + 1:tree.rfind("}")]
    for i, c in enumerate(body):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    out = []
    for p in parts:
        if p:
            out += [prefix + q for q in expand_use(p)]
    return out


def paths_in(code):
    """Every `crate::…` / `super::…` path of a file's code."""
    found = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)\b[^;]*);", code):
        found += expand_use(m.group(1))
    rest = re.sub(r"\buse\s+[^;]*;", "", code)
    found += re.findall(r"\b(?:crate|super)(?:::" + IDENT + ")+", rest)
    return found


def resolve(path, here, mods):
    """The deepest known module a path names, seen from module `here`."""
    segs = [s for s in path.split("::") if s]
    base = list(here)
    if segs and segs[0] == "crate":
        base, segs = [], segs[1:]
    else:
        while segs and segs[0] in ("super", "self"):
            if segs.pop(0) == "super":
                base = base[:-1]
    target = tuple(base)
    for s in segs:
        if target + (s,) in mods:
            target = target + (s,)
        else:
            break
    return target


def sccs(nodes, edges):
    """Tarjan's strongly connected components of more than one node."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def graph(src):
    mods = modules(src)
    edges = {}
    for here, file in mods.items():
        with open(file, encoding="utf-8") as f:
            code = strip_comments(f.read())
        for p in paths_in(code):
            t = resolve(p, here, mods)
            # Self, and a parent naming its own children: not edges.
            if t == here or t[: len(here)] == here:
                continue
            edges.setdefault(here, set()).add(t)
    return mods, edges


def name(m):
    return "::".join(m) or "crate"


def main(srcs):
    total = 0
    for src in srcs:
        mods, edges = graph(src)
        top = {}
        for a, ts in edges.items():
            for b in ts:
                if a[:1] != b[:1] and a and b:
                    top.setdefault(a[:1], set()).add(b[:1])
        for level, nodes, es in (("file", mods.keys(), edges), ("top", {m[:1] for m in mods if m}, top)):
            found = sccs(nodes, es)
            total += len(found)
            print(f"{src}: {level} level: {len(found)} circle(s)")
            for comp in found:
                inner = {a: sorted(name(b) for b in es.get(a, ()) if b in comp) for a in comp}
                print("  " + " <-> ".join(name(m) for m in comp))
                for a, bs in inner.items():
                    print(f"    {name(a)} -> {', '.join(bs)}")
    return 1 if total else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
