# Generates sm90_wgmma_gen.cuh (inline-asm wrappers of wgmma m64nNk32 e4m3, N = 8, 64, 128, 256).
out = []
out.append("// Generated: wgmma.mma_async m64nNk32 e4m3 x e4m3 -> f32 wrappers (N = 8, 64, 128, 256).")
for n in (8, 64, 128, 256):
    r = n // 2
    regs = ", ".join(f"%{i}" for i in range(r))
    out.append(f"__device__ __forceinline__ void wgmma_m64n{n}k32_e4m3(float (&d)[{r}], uint64_t da, uint64_t db, int scale_d) {{")
    out.append("  asm volatile(")
    out.append('      "{\\n.reg .pred p;\\n"')
    out.append(f'      "setp.ne.b32 p, %{r+2}, 0;\\n"')
    out.append(f'      "wgmma.mma_async.sync.aligned.m64n{n}k32.f32.e4m3.e4m3 "')
    # split the register list into lines
    items = [f"%{i}" for i in range(r)]
    lines = []
    for i in range(0, r, 16):
        lines.append(", ".join(items[i:i+16]))
    out.append('      "{"')
    for i, l in enumerate(lines):
        sep = "," if i + 1 < len(lines) else ""
        out.append(f'      "{l}{sep}"')
    out.append(f'      "}}, %{r}, %{r+1}, p, 1, 1;\\n}}\\n"')
    cons = ", ".join(f'"+f"(d[{i}])' for i in range(r))
    out.append(f"      : {cons}")
    out.append('      : "l"(da), "l"(db), "r"(scale_d));')
    out.append("}")
import os; open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sm90_wgmma_gen.cuh"), "w").write("#pragma once\n#include <cstdint>\n" + "\n".join(out) + "\n")
