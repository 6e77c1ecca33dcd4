"""Static checks on the source: comments say what and why.

Measured figures belong in BENCHMARKS.md or RESULTS.md next to the command
that prints them; code comments and docstrings that carry a date, a
machine or an issue number go stale without anything failing. This scans
the library and the experiment scripts (tests may name a machine where a
tolerance depends on it).
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# What a lab-notebook comment looks like: a date, a machine, an issue.
PATTERNS = {
    "a date": re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b"),
    "an issue number": re.compile(r"\bissues?[- ]#?\d", re.IGNORECASE),
    "a machine": re.compile(r"\b\d+-core\b|\b[HA][12]00\b", re.IGNORECASE),
}


def _sources():
  for folder in ("pgmoe_jax", "experiments"):
    yield from sorted((ROOT / folder).rglob("*.py"))


def test_the_scan_finds_the_sources():
  names = {p.relative_to(ROOT).as_posix() for p in _sources()}
  assert "pgmoe_jax/kinetic.py" in names
  assert "experiments/configs/default.py" in names


@pytest.mark.parametrize("what", sorted(PATTERNS))
def test_no_lab_notebook_in_code(what):
  found = []
  for path in _sources():
    for i, line in enumerate(path.read_text().splitlines(), 1):
      if PATTERNS[what].search(line):
        found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
  assert not found, f"{what} in the code:\n" + "\n".join(found)


@pytest.mark.parametrize("line", [
    "# Measured on 2026-12-03 (python -m experiments.benchmark)",
    "  # the fix for issue 4's train step",
    "  on the 2-core CPU at 32x32 chunks of 200 solved 541/s",
    "  (H200, batch 4,096)",
])
def test_the_patterns_catch_a_lab_notebook_line(line):
  assert any(p.search(line) for p in PATTERNS.values())
