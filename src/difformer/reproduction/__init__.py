"""The paper tables: cells, the multirun that fills them, reports, records, baseline search."""
