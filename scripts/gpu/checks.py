"""The verdict on the GPU check's cases, one definition for kernel_check.py (which writes them) and
report.py (which counts them again): a case passes when it says ok and its error is a finite number
within its tolerance. A non-finite error is written as null (JSON has no Infinity)."""
import json, math, sys


def within(err, tol):
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return num(err) and num(tol) and err <= tol


def passed(row, err_key="relError"):
    return row.get("ok") is True and within(row.get(err_key), row.get("tolerance"))


def case(kernel, name, err, tol):
    err = float(err)
    return {"kernel": kernel, "case": name, "relError": err if math.isfinite(err) else None, "tolerance": tol, "ok": within(err, tol)}


def write(rows, path):
    with open(path, "w") as f:
        json.dump(rows, f, indent=1, allow_nan=False)


def on_crash(rows, path, what):
    """an exception part-way still writes the cases checked so far, with a failing one that names it"""

    def hook(kind, value, tb):
        rows.append({"kernel": what, "case": f"stopped: {kind.__name__}: {value}", "relError": None, "tolerance": 0.0, "ok": False})
        write(rows, path)
        sys.__excepthook__(kind, value, tb)

    sys.excepthook = hook


def finish(rows, path, what):
    """writes the rows, prints the count, and exits 1 unless there were cases and every one passed"""
    write(rows, path)
    good = sum(passed(r) for r in rows)
    print(f"{what}: {good}/{len(rows)} within tolerance")
    sys.exit(0 if rows and good == len(rows) else 1)


def paley(order):
    """Paley-I Hadamard matrix of order q + 1 (q = 11, 19), entries +-1, as engines/builder/hadamard.ts builds it."""
    q = order - 1
    res = {(x * x) % q for x in range(1, q)}
    chi = lambda x: 0 if x == 0 else (1 if x in res else -1)
    return [[(1 if i == j else 0) + ((0 if j == 0 else 1) if i == 0 else (-1 if j == 0 else chi((j - i) % q)))
             for j in range(order)] for i in range(order)]
