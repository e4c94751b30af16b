"""mkdocs hook: one results page per reproduced table, generated at build time from
``reproduction/<table>.md`` and its difference plot, so the site shows exactly what
``scripts/reproduce.py`` wrote (never a copy edited by hand)."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

REPRODUCTION = Path(__file__).resolve().parent.parent / "reproduction"
TITLES = {
    "table1": "Table 1: Cora, CiteSeer, PubMed",
    "table2": "Table 2: ogbn-proteins, Pokec",
    "table3": "Table 3: CIFAR-10, STL-10, 20News",
    "table4": "Table 4: spatial-temporal",
    "heterophily": "Heterophily (JMLR extension)",
    "molhiv": "Graph-level: HIV",
    "enzymes": "Graph-level: ENZYMES",
    "zinc": "Graph-level: ZINC",
}


def tables() -> list[str]:
    return [t for t in TITLES if (REPRODUCTION / f"{t}.md").exists()]


def has_paper_numbers(table: str) -> bool:
    """Whether any cell of the table has a paper number (else its difference plot is empty)."""
    import csv

    path = REPRODUCTION / f"{table}.csv"
    if not path.exists():
        return False
    with open(path, newline="") as f:
        return any(row.get("paper_mean") for row in csv.DictReader(f))


def page(table: str) -> str:
    report = (REPRODUCTION / f"{table}.md").read_text()
    body = report.split("\n", 1)[1]  # the report's own title is replaced by the page's
    plotted = (REPRODUCTION / f"{table}.png").exists() and has_paper_numbers(table)
    plot = f"\n![ours minus the paper, per cell]({table}.png)\n" if plotted else ""
    return f"# {TITLES[table]}\n{plot}{body}"


def index() -> str:
    lines = [
        "# Results",
        "",
        "Each page is generated from `reproduction/<table>.md`, which `scripts/reproduce.py` "
        "writes with the date and the machine of every measured cell; the records behind them "
        "are in `reproduction/results/`. A cell measured at a reduced budget says so in its row.",
        "",
    ]
    lines += [f"- [{TITLES[t]}]({t}.md)" for t in tables()]
    return "\n".join(lines) + "\n"


def on_files(files, config):
    files.append(File.generated(config, "results/index.md", content=index()))
    for table in tables():
        files.append(File.generated(config, f"results/{table}.md", content=page(table)))
        png = REPRODUCTION / f"{table}.png"
        if png.exists():
            files.append(File.generated(config, f"results/{table}.png", abs_src_path=str(png)))
    return files
