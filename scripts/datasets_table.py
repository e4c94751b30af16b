"""Write docs/datasets.md from the dataset registry (difformer.data.registry.DATASETS)."""
from pathlib import Path

from difformer.data.registry import markdown_table

HEADER = ("# Datasets\n\nGenerated from `difformer.data.registry` by `python scripts/datasets_table.py`"
          " (tests/test_layout.py fails when it is out of date). A dataset's row is its\n"
          "`DatasetSpec`: the task kind names its class in `difformer.train.tasks`.\n\n")


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"
    out.write_text(HEADER + markdown_table())
    print(out)


if __name__ == "__main__":
    main()
