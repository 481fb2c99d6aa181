"""The compliance report as a PDF document (``lienthong report --format pdf``), A4 landscape: the
title, period and reporting unit, the table per level, a bar chart of each level's share against
its target (drawn as vector graphics), the notes, then the table per agency over as many pages as
it takes.

The text is set in DejaVu Sans (Debian's ``fonts-dejavu-core``; Noto Sans from ``fonts-noto-core``
also serves), embedded in the file, so Vietnamese renders wherever the PDF is opened.
Written with fpdf2.
"""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF

from broker import i18n
from broker.core.errors import ConfigError
from broker.i18n import N_, _
from broker.ops.report_layout import Bar, Layout, Table

_DEJAVU, _NOTO = Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/noto")
FONTS = ((_DEJAVU / "DejaVuSans.ttf", _DEJAVU / "DejaVuSans-Bold.ttf"),
         (_NOTO / "NotoSans-Regular.ttf", _NOTO / "NotoSans-Bold.ttf"))
"""(regular, bold) fonts with Vietnamese glyphs, in the order they are looked for."""
SHARE_COLOR, TARGET_COLOR, GRID_COLOR = (47, 85, 151), (192, 0, 0), (200, 200, 200)


def font_files() -> tuple[Path, Path]:
    for regular, bold in FONTS:
        if regular.is_file() and bold.is_file():
            return regular, bold
    raise ConfigError(N_("no font with Vietnamese glyphs for the PDF; looked at: {places} "
                         "(scripts/bootstrap.sh installs fonts-dejavu-core)"),
                      places=", ".join(str(r) for r, _b in FONTS))


def _cell(value: object, kind: str, pdf: _Report) -> str:
    if value is None or value == "":
        return ""
    if kind == "share":
        return pdf.cat.percent(float(str(value)))
    if kind == "count":
        return pdf.cat.number(int(str(value)))
    return str(value)


class _Report(FPDF):
    def __init__(self, title: str) -> None:
        super().__init__(orientation="landscape", format="A4")
        self.cat = i18n.current()
        regular, bold = font_files()
        self.add_font("Body", "", str(regular))
        self.add_font("Body", "B", str(bold))
        self.set_title(title)
        self.set_creator("lienthong")
        self.set_lang(self.cat.lang)
        self.set_auto_page_break(auto=True, margin=15)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Body", "", 8)
        self.cell(0, 6, _("Page {page}", page=self.page_no()), align="C")

    def draw_table(self, table: Table, widths: list[float]) -> None:
        self.set_font("Body", "B", 11)
        self.multi_cell(0, 7, table.title, new_x="LMARGIN", new_y="NEXT")
        self.set_font("Body", "", 8)
        align = tuple("LEFT" if k == "text" else "RIGHT" for k in table.kinds)
        with self.table(col_widths=tuple(widths), text_align=align, line_height=4.5,
                           headings_style=_headings(), repeat_headings=1) as t:
            t.row(table.headings)
            for cells in table.rows:
                t.row([_cell(v, k, self) for v, k in zip(cells, table.kinds, strict=True)])
        self.ln(3)

    def chart(self, title: str, bars: list[Bar], share_label: str, target_label: str) -> None:
        """Bars of each level's share, a red tick at its target, on a 0-100% scale."""
        height, width = 60.0, 190.0
        if self.get_y() + height + 25 > self.h - 15:
            self.add_page()
        self.set_font("Body", "B", 11)
        self.cell(0, 7, title, new_x="LMARGIN", new_y="NEXT")
        x0, y0 = self.l_margin + 14, self.get_y() + 4
        self.set_font("Body", "", 7)
        self.set_draw_color(*GRID_COLOR)
        for pct in range(0, 101, 20):
            y = y0 + height * (1 - pct / 100)
            self.line(x0, y, x0 + width, y)
            self.text(x0 - 10, y + 1, f"{pct}%")
        slot = width / max(1, len(bars))
        for n, bar in enumerate(bars):
            left = x0 + n * slot + slot * 0.25
            if bar.share is not None:
                self.set_fill_color(*SHARE_COLOR)
                self.rect(left, y0 + height * (1 - bar.share), slot * 0.5, height * bar.share, style="F")
                self.set_xy(left, y0 + height * (1 - bar.share) - 5)
                self.cell(slot * 0.5, 4, self.cat.percent(bar.share), align="C")
            if bar.target is not None:
                self.set_draw_color(*TARGET_COLOR)
                self.set_line_width(0.8)
                y = y0 + height * (1 - bar.target)
                self.line(left - 2, y, left + slot * 0.5 + 2, y)
                self.set_line_width(0.2)
            self.set_xy(x0 + n * slot, y0 + height + 1)
            self.cell(slot, 4, bar.label, align="C")
        legend = y0 + height + 9
        self.set_fill_color(*SHARE_COLOR)
        self.rect(x0, legend - 2.5, 4, 3, style="F")
        self.text(x0 + 6, legend, share_label)
        self.set_draw_color(*TARGET_COLOR)
        self.set_line_width(0.8)
        self.line(x0 + 60, legend - 1, x0 + 66, legend - 1)
        self.set_line_width(0.2)
        self.text(x0 + 68, legend, target_label)
        self.set_draw_color(0, 0, 0)
        self.set_y(legend + 5)


def _headings() -> object:
    from fpdf.fonts import FontFace

    return FontFace(emphasis="BOLD", fill_color=(221, 228, 240))


def write(layout: Layout, path: Path) -> None:
    pdf = _Report(layout.title)
    pdf.add_page()
    pdf.set_font("Body", "B", 13)
    pdf.multi_cell(0, 7, layout.title, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Body", "", 10)
    for line in (layout.period, layout.unit, layout.made):
        pdf.cell(0, 6, line, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.draw_table(layout.levels, [34, 20, 22, 18, 20, 18, 24, 16, 32, 20, 24, 23])
    pdf.chart(layout.chart_title, layout.chart, layout.share_label, layout.target_label)
    pdf.set_font("Body", "", 8)
    for note in layout.notes:
        pdf.multi_cell(0, 4.5, note, new_x="LMARGIN", new_y="NEXT")
    pdf.add_page()
    pdf.draw_table(layout.agencies, [24, 50, 22, 20, 20, 16, 22, 16, 18, 22, 20, 22])
    pdf.output(str(path))
