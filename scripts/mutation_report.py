"""Print the mutation score of the last `make mutation` run, per module and in all, and list
every mutant that was not killed (read from mutmut's result files in mutants/).

Score = killed / (all mutants - skipped); a mutant that timed out counts as killed (the tests
noticed it), one that no test covers counts as surviving. Run `mutmut show NAME` for a
survivor's diff."""

import json
import sys
from collections import Counter
from pathlib import Path

KILLED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout"}
STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked"}


def status(exit_code: int | None) -> str:
    return KILLED.get(exit_code) or STATUS.get(exit_code, f"suspicious ({exit_code})")


def main() -> int:
    results = sorted(Path("mutants").rglob("*.py.meta"))
    if not results:
        print("No mutation results in mutants/: run `make mutation` first.")
        return 1
    totals: Counter = Counter()
    survivors: list[tuple[str, str]] = []
    print(f"{'module':45} {'mutants':>8} {'killed':>8} {'score':>7}")
    for meta in results:
        module = str(meta.relative_to("mutants"))[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(status(code) for code in codes.values())
        killed = counts["killed"] + counts["timeout"]
        scored = len(codes) - counts["skipped"]
        totals.update(counts)
        survivors += [
            (name, status(code))
            for name, code in codes.items()
            if status(code) not in ("killed", "timeout", "skipped")
        ]
        score = f"{100 * killed / scored:.1f}%" if scored else "-"
        print(f"{module:45} {scored:>8} {killed:>8} {score:>7}")
    killed = totals["killed"] + totals["timeout"]
    scored = sum(totals.values()) - totals["skipped"]
    print(f"{'all':45} {scored:>8} {killed:>8} {100 * killed / max(scored, 1):>6.1f}%")
    print()
    print(f"Not killed ({len(survivors)}); see docs/TESTING.md, and `mutmut show NAME`:")
    for name, what in sorted(survivors):
        print(f"  {what:12} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
