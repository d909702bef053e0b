"""Run the test suite as short-lived pytest processes, two at a time.

``make test`` calls this instead of one long ``pytest -n 2``. Why:

- **Crash isolation.** XLA's CPU compiler segfaulted in a long-lived pytest-xdist worker
  that had compiled hundreds of programs (never in a fresh process), and xdist's file
  scheduler then hung waiting on the dead worker until CI's time ran out. Here each group
  of test files runs in its own process with its own timeout: a crash or a hang fails that
  group, names it, and the rest still runs. A group killed by a signal is re-run once
  in a fresh process, and the output says so.
- **Balance.** Groups are packed from measured costs (``tests/suite_costs.json``, written
  by ``--record``), longest first, and the example scripts are split over several groups,
  so neither slot idles while the other runs the examples one by one.
- **Compile time.** The tests' models are tiny, so most of their time is XLA compiling,
  and most of that is LLVM optimising kernels. Every group except the parity tests
  against transformers runs with XLA's backend optimisation off (`QUICK_XLA_FLAG_SETS`,
  appended to any ``XLA_FLAGS`` given): test_patching.py takes 87 s instead of 164 s.
  The parity files keep the default flags, so the code users get compiled is still
  checked against transformers to the last digit, and so do the few units that run
  more than they compile (`OPTIMISED`).

Usage: ``python tests/run_suite.py [-j 2] [--timeout S] [--record FILE] [-- pytest args]``.
Prints one line per group, the failures' output, the slowest files, and a closing
``N passed, N failed`` line; exits non-zero if any test failed or any group crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COSTS = os.path.join(HERE, "suite_costs.json")
EXAMPLES = "test_examples.py"
DEFAULT_COST = 30.0  # seconds, for a file not yet measured
GROUP_TARGET = 150.0  # seconds of measured cost per process: startup amortised, lifetime bounded
# Tried in turn (an XLA build that lacks a flag aborts at start-up), none last.
QUICK_XLA_FLAG_SETS = (
    "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false",
    "--xla_backend_optimization_level=0",
    "",
)
# Units that keep XLA's default flags: the parity tests against transformers (the files
# conftest marks "hf": the code users get is what they check), and the few that run more
# than they compile (training loops), measured faster with optimised kernels
# (test_detectors.py 43 s vs 58 s; rome.py 57 vs 76 s of CPU).
PARITY = {"test_parity_hf.py", "test_parity_new_families.py", "test_smollm2.py", "test_bert_minilm.py"}
COMPUTE_BOUND = {"test_detectors.py", "rome.py", "embedding_space.py", "toy_transformers.py"}
OPTIMISED = PARITY | COMPUTE_BOUND


def quick_xla_flags() -> str:
    """The first of `QUICK_XLA_FLAG_SETS` that this JAX starts and compiles with."""
    probe = "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"
    for flags in QUICK_XLA_FLAG_SETS[:-1]:
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()}
        if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode == 0:
            return flags
    return QUICK_XLA_FLAG_SETS[-1]


def is_optimised(unit: str) -> bool:
    """Whether a unit (a test file, or one example script) keeps the default flags."""
    name = unit.split("[", 1)[1].rstrip("]") if "[" in unit else unit.split("::")[0].removeprefix("tests/")
    return name in OPTIMISED


def example_ids() -> list[str]:
    """Node ids of the example-script tests (one per script), as pytest names them."""
    sys.path.insert(0, HERE)
    from test_examples import EXAMPLES as scripts  # the scripts test_examples.py parametrises

    return [f"tests/{EXAMPLES}::test_example_runs_in_quick_mode[{s}]" for s in scripts]


def units(costs: dict[str, float]) -> list[tuple[str, float]]:
    """The schedulable units (a test file, or one example script) with their costs."""
    files = sorted(f for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
    out = [(f"tests/{f}", costs.get(f, DEFAULT_COST)) for f in files if f != EXAMPLES]
    if EXAMPLES in files:
        # --record keys an example by its script name ("probes.py"), the id's parameter.
        out += [(i, costs.get(i.split("[", 1)[1].rstrip("]"), DEFAULT_COST)) for i in example_ids()]
    return out


def pack(items: list[tuple[str, float]], target: float) -> list[tuple[list[str], float]]:
    """Groups of units of about ``target`` cost, longest units first (first-fit decreasing);
    the groups come back longest first, so the two slots finish close together."""
    groups: list[tuple[list[str], float]] = []
    for unit, cost in sorted(items, key=lambda x: -x[1]):
        for i, (members, total) in enumerate(groups):
            if total + cost <= target:
                groups[i] = (members + [unit], total + cost)
                break
        else:
            groups.append(([unit], cost))
    return sorted(groups, key=lambda g: -g[1])


def run_group(members: list[str], extra: list[str], timeout: float, logdir: str, index: int, xla_flags: str) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()}
    xml = os.path.join(logdir, f"group{index}.xml")
    log = os.path.join(logdir, f"group{index}.log")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *extra, *members]
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = "timeout"
    wall = time.monotonic() - start
    with open(log) as f:
        text = f.read()
    return {"members": members, "rc": rc, "wall": wall, "log": text, "times": _times(xml), "index": index}


def _times(xml: str) -> dict[str, float]:
    """Seconds per file (and per example script) from pytest's JUnit XML."""
    times: dict[str, float] = {}
    if not os.path.exists(xml):
        return times
    for case in ET.parse(xml).getroot().iter("testcase"):
        name, cls = case.get("name", ""), case.get("classname", "")
        key = next((p + ".py" for p in cls.split(".") if p.startswith("test_")), "?")
        if key == EXAMPLES and "[" in name:
            key = name[name.index("[") + 1 : -1]
        times[key] = times.get(key, 0.0) + float(case.get("time", 0.0))
    return times


def counts(log: str) -> dict[str, int]:
    """passed/failed/error/skipped counts from pytest's closing line."""
    lines = [ln for ln in log.strip().splitlines() if re.search(r"\d+ (passed|failed|errors?)|no tests ran", ln)]
    tail = lines[-1] if lines else ""
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", tail)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-j", "--jobs", type=int, default=2, help="pytest processes at once (default 2)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds before a group is killed (default 900)")
    ap.add_argument("--record", metavar="FILE", help="write measured per-file costs (JSON) to FILE")
    ap.add_argument("--only", nargs="*", default=None, help="run only these test files / node ids")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args()
    costs = json.load(open(COSTS)) if os.path.exists(COSTS) else {}
    items = units(costs)
    if args.only is not None:
        items = [(u, c) for u, c in items if any(u.endswith(o) or o in u for o in args.only)]
    flags = quick_xla_flags()
    groups = sorted(
        [(m, c, "") for m, c in pack([i for i in items if is_optimised(i[0])], GROUP_TARGET)]
        + [(m, c, flags) for m, c in pack([i for i in items if not is_optimised(i[0])], GROUP_TARGET)],
        key=lambda g: -g[1],
    )
    print(f"{len(items)} units in {len(groups)} groups, {args.jobs} at a time; XLA_FLAGS += {flags!r} "
          f"except for {sorted(OPTIMISED)}", flush=True)
    start = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory() as logdir, ThreadPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(run_group, members, args.pytest_args, args.timeout, logdir, i, group_flags)
            for i, (members, _, group_flags) in enumerate(groups)
        ]
        for fut in as_completed(futures):
            r = fut.result()
            if isinstance(r["rc"], int) and r["rc"] < 0:
                # Killed by a signal (XLA's CPU compiler has segfaulted in long-lived test
                # processes): run that group once more in a fresh process, and say so.
                print(
                    f"[CRASHED: signal {-r['rc']}] group {r['index']}: {r['log'][-3000:]}\nre-running it once",
                    flush=True,
                )
                r = run_group(r["members"], args.pytest_args, args.timeout, logdir, r["index"], groups[r["index"]][2])
                r["crashed_once"] = True
            results.append(r)
            c = counts(r["log"])
            if r["rc"] == 0:
                status = "ok after a crash and a re-run" if r.get("crashed_once") else "ok"
            else:
                status = "TIMEOUT" if r["rc"] == "timeout" else f"FAILED (exit {r['rc']})"
            names = " ".join(m.split("::")[-1].replace("tests/", "") for m in r["members"])
            print(f"[{status}] {r['wall']:6.1f} s  {c}  {names}", flush=True)
    passed = sum(counts(r["log"]).get("passed", 0) for r in results)
    failed = sum(
        counts(r["log"]).get("failed", 0) + counts(r["log"]).get("errors", 0) + counts(r["log"]).get("error", 0)
        for r in results
    )
    bad = [r for r in results if r["rc"] != 0]
    for r in sorted(bad, key=lambda r: r["index"]):
        print(f"\n===== group {r['index']} ({r['rc']}): {' '.join(r['members'])} =====")
        print(r["log"][-20000:])
        if not counts(r["log"]).get("failed") and not counts(r["log"]).get("errors"):
            failed += 1  # a crash, a timeout or a collection error: count the group as one failure
    times: dict[str, float] = {}
    for r in results:
        times.update(r["times"])
    slowest = sorted(times.items(), key=lambda x: -x[1])[:15]
    print("\nslowest: " + ", ".join(f"{k} {v:.0f}s" for k, v in slowest))
    print(f"wall {time.monotonic() - start:.0f} s, {len(groups)} groups")
    if args.record:
        with open(args.record, "w") as f:
            json.dump({k: round(v, 1) for k, v in sorted(times.items())}, f, indent=1)
    print(f"{passed} passed, {failed} failed")
    return 1 if bad or failed else 0


if __name__ == "__main__":
    sys.exit(main())
