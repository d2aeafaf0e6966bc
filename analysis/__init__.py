"""Analysis and reporting: MLflow runs of a sweep -> tidy frame -> statistics, figures, tables, report.

Nothing here runs at import. The modules, in data-flow order:

- ``load``: MLflow -> runs frame (``params/...``, ``metrics/...``, ``tags/...``), histories, artifacts
- ``frame``: the grouping columns (family, heads, point, label, ...) and helpers over the frame
- ``stats``: mean, std, 95% bootstrap CIs over seeds, paired differences
- ``paper``, ``paper_match``, ``ordering``: the paper's numbers and the ordering check
- ``style``, ``fig_*``: figures; ``tables``: Markdown/LaTeX tables
- ``report``, ``report_index``, ``index``, ``checks``, ``spec``: ``mhmoe report`` end to end
"""
