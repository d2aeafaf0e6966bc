"""Analysis and reporting: MLflow runs of a sweep -> tidy frame -> statistics, figures, tables, report.

Nothing here runs at import. The modules, in data-flow order:

- ``load``: MLflow -> runs frame (``params/...``, ``metrics/...``, ``tags/...``), histories, artifacts
- ``frame``: the grouping columns (family, heads, point, label, ...) and helpers over the frame
- ``stats``: mean, std, 95% CIs over seeds (Student-t below 10 seeds, BCa from 10), paired differences,
  resolved or within noise, seeds needed
- ``sequential``: the seeds-until-resolved stopping rule (repeated intervals valid over every look)
- ``verdict``: who wins: one verdict row per comparison (the sweep and the report share it)
- ``paper``, ``paper_match``, ``ordering``: the paper's numbers and the ordering check
- ``style``: figure style, the paper's names and row order; ``fig_*``: figures, each listed in its ``FIGURES``
  (``figures``: the registry the report draws); ``tables``: Markdown/LaTeX tables
- ``report``, ``report_index``, ``index``, ``checks``: ``mhmoe report`` end to end
"""
