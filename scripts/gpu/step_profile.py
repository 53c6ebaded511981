"""Per-kernel times of decode steps of a random benchmark engine (bench.py's), for reading under
Nsight Compute: ME_LIB=lib.so ncu ... python3 step_profile.py SHAPE RECIPE BATCH STEPS. Without ncu it
prints the step time. Kernels then run one by one, so set MAMBA_EDGE_PDL=0 to time them alone.
(Not named profile.py: that would shadow the standard library's profile module, which transformers
imports, for every script in this folder.)"""
import ctypes, os, shutil, sys
import bench

shape, recipe, b, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
path = os.path.join(bench.tmp, f"prof-{shape}-{recipe}.mamba")
bench.write_engine(shape, recipe, path)
lib = bench.lib
h = lib.me_create(path.encode(), max(b, 1), max(b, 1) + 1)
if not h:
    sys.exit(lib.me_last_error().decode())
ms = ctypes.c_float()
if lib.me_bench_step(h, b, steps, ctypes.byref(ms)):
    sys.exit(lib.me_last_error().decode())
print(f"{shape} {recipe} batch {b}: {ms.value:.3f} ms per step", flush=True)
lib.me_destroy(h)
shutil.rmtree(path, ignore_errors=True)
