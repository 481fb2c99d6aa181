"""The compliance report as an Excel workbook (``lienthong report --format xlsx``): one sheet with
the title, period, reporting unit, the table per level and a native bar chart of each level's
share against its target; a second sheet per agency.  Shares are numbers formatted as
percentages, so the reader's own formulas and charts can use them.

Written with XlsxWriter; the tests read it back with openpyxl, another implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import xlsxwriter

from broker.i18n import _
from broker.ops.report_layout import Layout, Table


def _write_table(ws: Any, row: int, table: Table, fmt: dict[str, Any]) -> int:
    """Write ``table`` from ``row``; returns the row after it."""
    ws.write(row, 0, table.title, fmt["section"])
    ws.write_row(row + 1, 0, table.headings, fmt["heading"])
    for r, cells in enumerate(table.rows, start=row + 2):
        for c, (value, kind) in enumerate(zip(cells, table.kinds, strict=True)):
            if value is None or value == "":
                ws.write_blank(r, c, None, fmt["cell"])
            elif kind == "share":
                ws.write_number(r, c, float(value), fmt["share"])
            elif kind == "count":
                ws.write_number(r, c, int(value), fmt["count"])
            else:
                ws.write_string(r, c, str(value), fmt["cell"])
    return row + 2 + len(table.rows)


def write(layout: Layout, path: Path) -> None:
    wb = xlsxwriter.Workbook(str(path))
    base = {"font_name": "Times New Roman", "font_size": 12}  # the font of Vietnamese administrative documents
    fmt = {"title": wb.add_format({**base, "bold": True, "font_size": 14}),
           "line": wb.add_format({**base, "italic": True}),
           "section": wb.add_format({**base, "bold": True}),
           "heading": wb.add_format({**base, "bold": True, "text_wrap": True, "valign": "vcenter",
                                     "align": "center", "border": 1, "bg_color": "#DDE4F0"}),
           "cell": wb.add_format({**base, "border": 1}),
           "count": wb.add_format({**base, "border": 1, "num_format": "#,##0"}),
           "share": wb.add_format({**base, "border": 1, "num_format": "0.0%"})}
    ws = wb.add_worksheet(_("Per level"))
    ws.set_column(0, 0, 24)
    ws.set_column(1, len(layout.levels.headings) - 1, 14)
    ws.write(0, 0, layout.title, fmt["title"])
    for row, text in enumerate((layout.period, layout.unit, layout.made), start=1):
        ws.write(row, 0, text, fmt["line"])
    first = 5
    end = _write_table(ws, first, layout.levels, fmt)
    for n, note in enumerate(layout.notes, start=end + 1):
        ws.write(n, 0, note, fmt["line"])
    chart = wb.add_chart({"type": "column"})
    sheet, rows = ws.get_name(), (first + 2, end - 1)
    share_col, target_col = layout.levels.kinds.index("share"), layout.levels.kinds.index("share") + 1
    for col, name, color in ((share_col, layout.share_label, "#2F5597"), (target_col, layout.target_label, "#C00000")):
        chart.add_series({"name": name, "categories": [sheet, rows[0], 0, rows[1], 0],
                          "values": [sheet, rows[0], col, rows[1], col], "fill": {"color": color},
                          "data_labels": {"value": True, "num_format": "0%"}})
    chart.set_title({"name": layout.chart_title, "name_font": {"size": 12}})
    chart.set_y_axis({"min": 0, "max": 1, "num_format": "0%", "major_gridlines": {"visible": True}})
    chart.set_legend({"position": "bottom"})
    chart.set_size({"width": 760, "height": 360})
    ws.insert_chart(end + len(layout.notes) + 2, 0, chart)
    agencies = wb.add_worksheet(_("Per agency"))
    agencies.set_column(0, 0, 16)
    agencies.set_column(1, 1, 34)
    agencies.set_column(2, len(layout.agencies.headings) - 1, 13)
    agencies.write(0, 0, layout.title, fmt["title"])
    agencies.write(1, 0, layout.period, fmt["line"])
    _write_table(agencies, 3, layout.agencies, fmt)
    wb.close()
