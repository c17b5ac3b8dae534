#!/usr/bin/env python3
"""Import graph of a Rust crate's source folder (default: operator/src).

Prints the files, the import arrows between them, their levels, the import circles and the
imports that run back up. Python 3 standard library only; rerun it from anywhere:

    python3 scripts/import-graph.py                # operator/src, production code
    python3 scripts/import-graph.py --tests        # also the test code (see below)
    python3 scripts/import-graph.py --arrows       # also every arrow
    python3 scripts/import-graph.py pipeline-config/src

Definitions:
  file    a .rs file of the module tree from lib.rs (and main.rs, which sees the library
          by its crate name). Without --tests, files declared under #[cfg(test)] and
          inline #[cfg(test)] modules are left out; with --tests a file's inline test
          module is a node of its own, `file.rs (tests)`.
  arrow   file A names something in file B: a `use` of `crate::`, `self::`, `super::` or of
          a child module, or such a path written inline (`super::x::f()`, `build::Child`).
          A path resolves to the deepest file it passes through; one arrow per pair.
  level   0 for a file that imports no other file; otherwise one more than the highest
          level it imports (the files of a circle share one level).
  circle  files that import each other, directly or round a loop.
  upward  an arrow that runs back up: one inside a circle (it closes the loop), or one into
          a module that encloses the importer (a folder's mod.rs, or lib.rs).
"""

import argparse
import os
import re
import signal
from collections import defaultdict

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
ATTRS = r"((?:#\[[^\]]*\]\s*)*)"
VIS = r"(?:pub(?:\([^)]*\))?\s+)?"


def blank(text):
    return re.sub(r"[^\n]", " ", text)


def strip_code(text):
    """Blanks comments and string and char literals, keeping offsets and newlines."""
    out, i, n = [], 0, len(text)
    while i < n:
        prev = text[i - 1] if i else " "
        raw = re.match(r'b?r(#*)"', text[i:i + 40]) if not (prev.isalnum() or prev == "_") else None
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
        elif raw:
            end = text.find('"' + raw.group(1), i + raw.end())
            j = n if end < 0 else end + 1 + len(raw.group(1))
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
        elif text[i] == "'" and re.match(r"'(\\[^']+|[^\\'])'", text[i:i + 12]):
            j = i + re.match(r"'(\\[^']+|[^\\'])'", text[i:i + 12]).end()
        else:
            out.append(text[i])
            i += 1
            continue
        out.append(blank(text[i:j]))
        i = j
    return "".join(out)


def matching_brace(code, open_at):
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code) - 1


def expand_use_tree(tree):
    """`a::{b, c::{self, d as e}, f::*}` -> ['a::b', 'a::c', 'a::c::d', 'a::f']."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    tree = re.sub(r"\s+", "", tree)
    results = []

    def split_top(s):
        parts, depth, start = [], 0, 0
        for k, ch in enumerate(s):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if ch == "," and depth == 0:
                parts.append(s[start:k])
                start = k + 1
        return [p for p in parts + [s[start:]] if p]

    def walk(prefix, s):
        brace = s.find("{")
        if brace < 0:
            last = s.rstrip(":")
            results.append(prefix.rstrip(":") if last in ("self", "*") else prefix + last)
            return
        for part in split_top(s[brace + 1:s.rfind("}")]):
            walk(prefix + s[:brace], part)

    walk("", tree)
    return [r for r in results if r]


class Crate:
    def __init__(self, src, with_tests):
        self.src, self.with_tests = src, with_tests
        self.files = {}  # module path (tuple) -> path relative to src
        self.test_only = set()
        self.name = crate_name(src)
        lib, main = os.path.join(src, "lib.rs"), os.path.join(src, "main.rs")
        self.discover((), lib if os.path.exists(lib) else main, False)
        self.binary = main if os.path.exists(lib) and os.path.exists(main) else None

    def discover(self, module, path, test_only):
        self.files[module] = os.path.relpath(path, self.src)
        if test_only:
            self.test_only.add(module)
        text = open(path, encoding="utf-8").read()
        code = strip_code(text)
        folder = os.path.dirname(path)
        if os.path.basename(path) not in ("mod.rs", "lib.rs", "main.rs"):
            folder = os.path.join(folder, os.path.basename(path)[:-3])
        for m in re.finditer(ATTRS + VIS + r"mod\s+(" + IDENT + r")\s*;", code):
            attrs, name = text[m.start(1):m.end(1)], m.group(2)
            custom = re.search(r'#\[path\s*=\s*"([^"]+)"\]', attrs)
            candidates = (
                [os.path.join(folder, custom.group(1))]
                if custom
                else [os.path.join(folder, name + ".rs"), os.path.join(folder, name, "mod.rs")]
            )
            for candidate in candidates:
                if os.path.exists(candidate):
                    self.discover(module + (name,), candidate, test_only or "cfg(test)" in attrs)
                    break

    def included(self, module):
        return self.with_tests or module not in self.test_only

    def children(self, module):
        return {m[-1] for m in self.files if len(m) == len(module) + 1 and m[:-1] == module}

    def resolve(self, base, segments):
        """The deepest file a path starting at module `base` passes through."""
        module = base
        for segment in segments:
            if module + (segment,) not in self.files:
                break
            module = module + (segment,)
        return module


def crate_name(src):
    cargo = os.path.join(os.path.dirname(src), "Cargo.toml")
    if not os.path.exists(cargo):
        return ""
    text = open(cargo, encoding="utf-8").read()
    name = re.search(r"\[lib\][^\[]*?name\s*=\s*\"([^\"]+)\"", text, re.S) or re.search(
        r"\[package\][^\[]*?name\s*=\s*\"([^\"]+)\"", text, re.S
    )
    return name.group(1).replace("-", "_") if name else ""


def file_arrows(crate, module, path, node, binary=False):
    """{source node: {target node: line}} for one file."""
    text = open(path, encoding="utf-8").read()
    code = strip_code(text)
    blocks = []  # inline modules: (start, end, name, is_test)
    for m in re.finditer(ATTRS + VIS + r"mod\s+(" + IDENT + r")\s*\{", code):
        attrs = text[m.start(1):m.end(1)]
        blocks.append((m.start(), matching_brace(code, m.end() - 1), m.group(2), "cfg(test)" in attrs))
    if not crate.with_tests:
        for start, end, _, is_test in blocks:
            if is_test:
                code = code[:start] + blank(code[start:end + 1]) + code[end + 1:]
        blocks = [b for b in blocks if not b[3]]

    def scope_and_source(pos):
        inner = sorted((b for b in blocks if b[0] <= pos <= b[1]), key=lambda b: b[0])
        source = node + ("(tests)",) if any(b[3] for b in inner) else node
        return module + tuple(b[2] for b in inner), source

    arrows = defaultdict(dict)

    def add(pos, path_text):
        scope, source = scope_and_source(pos)
        segments = path_text.split("::")
        head = segments[0]
        if head == "crate" or (binary and head == crate.name):
            base, rest = (), segments[1:]
        elif head == "self":
            base, rest = scope, segments[1:]
        elif head == "super":
            base, rest = scope, segments
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
        elif not binary and head in crate.children(scope):
            base, rest = scope, segments
        else:
            return
        target = crate.resolve(base, rest)
        if target not in crate.files or not crate.included(target):
            return
        if target == node and source == node:
            return  # within the file
        arrows[source].setdefault(target, text.count("\n", 0, pos) + 1)

    uses = list(re.finditer(r"\buse\s+([^;]+);", code))
    for m in uses:
        for used in expand_use_tree(m.group(1)):
            add(m.start(), used)
    rest = code
    for m in uses:
        rest = rest[:m.start()] + blank(m.group(0)) + rest[m.end():]
    for m in re.finditer(r"(?<![A-Za-z0-9_:])(" + IDENT + r"(?:\s*::\s*" + IDENT + r")+)", rest):
        add(m.start(), re.sub(r"\s+", "", m.group(1)))
    return arrows


def components(nodes, edges):
    """Strongly connected components, dependencies before dependents (Tarjan, iterative)."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, successors = work[-1]
            advanced = False
            for w in successors:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(edges[w])))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                result.append(component)
    return result


def shortest_loop(start, members, edges):
    """The shortest loop of arrows from `start` back to it, inside one circle."""
    previous, queue = {start: None}, [start]
    while queue:
        v = queue.pop(0)
        for w in edges[v]:
            if w == start:
                path = [v]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return path[::-1] + [start]
            if w in members and w not in previous:
                previous[w] = v
                queue.append(w)
    return [start]


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", nargs="?", help="source folder (default: operator/src)")
    parser.add_argument("--tests", action="store_true", help="include the test code")
    parser.add_argument("--arrows", action="store_true", help="print every arrow")
    args = parser.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = args.src or os.path.join(repo, "operator", "src")
    if not os.path.exists(src):
        src = os.path.join(repo, src)
    src = os.path.abspath(src)
    crate = Crate(src, args.tests)

    names, sizes, edges = {}, {}, defaultdict(dict)
    sources = [(m, m, os.path.join(src, f), False) for m, f in crate.files.items() if crate.included(m)]
    if crate.binary:
        sources.append(((), ("<bin>",), crate.binary, True))
    for module, node, path, binary in sources:
        names[node] = os.path.relpath(path, src)
        sizes[node] = sum(1 for _ in open(path, encoding="utf-8"))
        for source, targets in file_arrows(crate, module, path, node, binary).items():
            if source != node:
                names[source] = names[node] + " (tests)"
                sizes[source] = 0
            edges[source].update(targets)
    nodes = sorted(names, key=lambda n: names[n])
    for n in nodes:
        edges[n] = dict(sorted(edges[n].items(), key=lambda kv: names[kv[0]]))

    sccs = components(nodes, edges)
    component_of = {v: i for i, c in enumerate(sccs) for v in c}
    level_of_component = {}
    for i, component in enumerate(sccs):
        below = {component_of[w] for v in component for w in edges[v]} - {i}
        level_of_component[i] = 1 + max((level_of_component[d] for d in below), default=-1)
    level = {n: level_of_component[component_of[n]] for n in nodes}
    circles = []
    for c in sccs:
        if len(c) > 1:
            members = sorted(c, key=lambda v: names[v])
            loop = shortest_loop(members[0], set(c), edges)
            circles.append((" -> ".join(names[v] for v in loop), [names[v] for v in members]))

    def encloses(outer, inner):
        return outer[:1] != ("<bin>",) and len(outer) < len(inner) and inner[:len(outer)] == outer

    upward = []
    for v in nodes:
        for w, line in edges[v].items():
            why = []
            if component_of[v] == component_of[w]:
                why.append("closes a circle")
            if encloses(w, tuple(x for x in v if x != "(tests)")):
                why.append("into its enclosing module")
            if why:
                upward.append(f"{names[v].replace(' (tests)', '')}:{line} -> {names[w]} ({', '.join(why)})")

    arrows = sum(len(edges[n]) for n in nodes)
    levels = 1 + max(level.values(), default=-1)
    what = "production and test code" if args.tests else "production code (--tests adds the tests)"
    print(f"import graph of {os.path.relpath(src, repo)}, {what}")
    tests = sum(1 for n in nodes if n[-1:] == ("(tests)",))
    files = f"{len(nodes) - tests} (+{tests} inline test modules)" if tests else f"{len(nodes)}"
    print(f"files: {files}  arrows: {arrows}  levels: {levels}  circles: {len(circles)}  upward imports: {len(upward)}")
    print("\nlevels, top first (0 imports no other file; lines in brackets):")
    for lvl in range(levels - 1, -1, -1):
        row = [f"{names[n]} ({sizes[n]})" if sizes[n] else names[n] for n in nodes if level[n] == lvl]
        print(f"  {lvl:2}: " + ", ".join(row))
    print(f"\ncircles: {len(circles)}")
    for loop, members in circles:
        print(f"  {loop}")
        if len(members) > loop.count(" -> "):
            print(f"    ({len(members)} files in all: {', '.join(members)})")
    print(f"\nupward imports: {len(upward)}")
    for line in sorted(upward):
        print("  " + line)
    if args.arrows:
        print(f"\narrows: {arrows}")
        for v in nodes:
            for w in edges[v]:
                print(f"  {names[v]} -> {names[w]}")


if __name__ == "__main__":
    main()
