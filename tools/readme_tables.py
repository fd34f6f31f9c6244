"""Rewrite the README's generated tables (failure codes, edits, margin anchors) from their
registries.

Run after changing stepedit_core/foundation/failures.py or the edit table: `python
tools/readme_tables.py`.
tests/test_failures.py fails while the README and the registries disagree.
"""

from __future__ import annotations

from pathlib import Path

from stepedit_core.dataset import objective
from stepedit_core.foundation import edits, failures

README = Path(__file__).resolve().parent.parent / "README.md"
TABLES = {
    "failure-codes": failures.markdown_table,
    "edit-table": edits.markdown_table,
    "margin-anchors": objective.markdown_table,
}


def main() -> None:
    text = README.read_text()
    for marker, make in TABLES.items():
        start, end = f"<!-- {marker}:start -->\n", f"<!-- {marker}:end -->"
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + start + make() + end + tail
    README.write_text(text)


if __name__ == "__main__":
    main()
