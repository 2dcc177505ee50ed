"""Where a benchmark's raw output goes: OUTPUT.json (every number) and OUTPUT.md (the table the README quotes)."""

import json
import os

from hf_ddpm.files import atomic_write_text


def write_results(output: str, results: dict, report: str) -> None:
    """Write `results` to `output`.json and `report` to `output`.md, each atomically (a killed run leaves the old)."""
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    atomic_write_text(output + ".json", json.dumps(results, indent=2, default=float) + "\n")
    atomic_write_text(output + ".md", report.rstrip("\n") + "\n")


def report_results(output: str | None, results: dict, report: str) -> None:
    """Print `report`; with an `output` path, also write both files (`write_results`)."""
    print(report)
    if output:
        write_results(output, results, report)
