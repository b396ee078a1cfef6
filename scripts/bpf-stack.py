#!/usr/bin/env python3
"""Per-program deepest BPF call chain of stack frames, from the object
(llvm-objdump): each function's frame is its deepest `r10 - N` access,
as the verifier counts it; the chain is summed with frames rounded up to
16 bytes (the JIT's rounding on recent kernels, 6.18 here) and to 32 (the
rounding of kernel 5.15, the oldest SPEC supports). The verifier refuses
a chain above 512 bytes.

    scripts/bpf-stack.py target/release/build/shield-user-*/out/shield [ENTRY...]
"""
import re, subprocess, sys
obj = sys.argv[1]
dis = subprocess.run(["llvm-objdump", "-dr", "--no-show-raw-insn", obj], capture_output=True, text=True).stdout
funcs, calls, sections, starts = {}, {}, {}, {}
cur = section = None
last_imm = None
for line in dis.splitlines():
    m = re.match(r"Disassembly of section (\S+):", line)
    if m: section = m.group(1); continue
    m = re.match(r"([0-9a-f]+) <(.+)>:", line)
    if m:
        cur = m.group(2); funcs[cur] = 0; calls[cur] = set(); sections[cur] = section
        if section == ".text": starts[int(m.group(1), 16)] = cur
        continue
    if cur is None: continue
    for off in re.findall(r"r10 - (\d+)", line):
        funcs[cur] = max(funcs[cur], int(off))
    m = re.search(r"\bcall (-?\d+)$", line)
    if m: last_imm = int(m.group(1)); continue
    m = re.search(r"R_BPF_64_32\s+(\S+)", line)
    if m and last_imm is not None:
        sym = m.group(1)
        if sym == ".text": sym = starts.get((last_imm + 1) * 8, f".text+{(last_imm+1)*8}")
        calls[cur].add(sym)
    last_imm = None
def depth(f, rnd, seen=()):
    if f in seen: return 0, []
    best, path = 0, []
    for c in calls.get(f, ()):
        if c not in funcs: continue
        d, p = depth(c, rnd, seen + (f,))
        if d > best: best, path = d, p
    # 5.15 rounds max(depth, 1) up to 32; the JIT's rounding keeps 0 at 0.
    fr = (max(funcs[f], 1 if rnd == 32 else 0) + rnd - 1) // rnd * rnd
    return fr + best, [f"{f}:{funcs[f]}"] + path
want = sys.argv[2:] or [f for f in funcs if sections[f] not in (".text",)]
for f in want:
    d16, p = depth(f, 16)
    d32, _ = depth(f, 32)
    print(f"{d16:4d} (x32: {d32:4d})  " + " -> ".join(p))
