"""The drawing as a PNG for Slack: the very primitives the SVG has, drawn by matplotlib's Agg
backend (no display, no pyplot global state) at twice the pixel size for sharp text."""

from __future__ import annotations

import io

from watcher.charts.layout import PALETTE, Drawing, Path, Rect, Role, Text

SCALE = 2  # output pixels per layout pixel
_DPI = 100
_PT_PER_PX = 72 / _DPI  # one layout pixel is 1/100 inch on a figure SCALEd by dpi


def render_png(drawing: Drawing) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    figure = Figure(figsize=(drawing.width / _DPI, drawing.height / _DPI), dpi=_DPI * SCALE)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, drawing.width)
    axes.set_ylim(drawing.height, 0)  # SVG coordinates: y grows downwards
    axes.set_axis_off()
    for item in drawing.items:
        style = PALETTE[item.role]
        if isinstance(item, Rect):
            axes.add_patch(
                Rectangle(
                    (item.x, item.y), item.w, item.h,
                    facecolor=style.fill or "none", alpha=style.opacity if style.opacity < 1 else None,
                    edgecolor=style.stroke or "none", linewidth=0.8 if style.stroke else 0,
                )
            )  # fmt: skip
        elif isinstance(item, Path):
            xs = [x for x, _ in item.points]
            ys = [y for _, y in item.points]
            dashes = (0, tuple(d / style.width for d in style.dash)) if style.dash else "solid"
            axes.plot(xs, ys, color=item.colour or style.stroke, linewidth=style.width * _PT_PER_PX,
                      linestyle=dashes, solid_joinstyle="round")  # fmt: skip
        elif isinstance(item, Text):
            axes.text(item.x, item.y, item.text, ha=_HA[item.anchor], va="baseline",
                      fontsize=style.font_size * _PT_PER_PX, color=style.fill or style.stroke)  # fmt: skip
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI * SCALE)
    return buffer.getvalue()


_HA = {"start": "left", "middle": "center", "end": "right"}

__all__ = ["SCALE", "Role", "render_png"]
