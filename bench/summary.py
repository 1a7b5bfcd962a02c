"""The one table at the end of ``make bench``: a row per acceptance figure, from the figures the
benches left in var/bench/<name>.json (bench/benchlib.py writes them).

    .venv/bin/python bench/summary.py [booking billing http search dashboard events incidents]

Columns: what, measured, goal, and ``ok`` or ``short`` (``-`` for a figure without a goal).
Exits 0 whether or not the figures reach their goals; exits 1 if a bench's guarantee check
failed (the ledger or the books) or a bench left no figures (it did not get to its check)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import RESULTS

BENCHES = ["booking", "http", "search", "dashboard", "billing", "events", "incidents"]


def main() -> int:
    names = sys.argv[1:] or BENCHES
    lines: list[tuple[str, str, str, str]] = []
    broken: list[str] = []
    for name in names:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            lines.append((f"{name}: no figures", "-", "-", "FAILED"))
            broken.append(f"{name} left no figures ({path}): it stopped before its check")
            continue
        result = json.loads(path.read_text())
        for entry in result["rows"]:
            lines.append((entry["what"], entry["measured"], entry["goal"], entry["status"]))
        if not result["guarantee_ok"]:
            lines.append((f"{name}: guarantee check", "broken", "holds", "FAILED"))
            broken.append(f"{name}: " + "; ".join(result.get("problems") or ["check failed"]))
    header = ("what", "measured", "goal", "")
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(4)]
    rule = "  ".join("-" * width for width in widths)
    print()
    print("  ".join(text.ljust(width) for text, width in zip(header, widths, strict=True)))
    print(rule)
    for line in lines:
        print("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)))
    print(rule)
    short = sum(line[3] == "short" for line in lines)
    met = sum(line[3] == "ok" for line in lines)
    print(f"{met} figures reach their goal, {short} short.", end=" ")
    if broken:
        print("GUARANTEE BROKEN or not checked:")
        for problem in broken:
            print(f"  - {problem}")
        return 1
    print("Every bench's ledger and books check held.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
