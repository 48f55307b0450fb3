"""The drawing as inline SVG: no JavaScript, a few kilobytes, styled by attributes (no inline
`style`, so a strict Content-Security-Policy holds)."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from watcher.charts.layout import PALETTE, Drawing, Path, Rect, Role, Style, Text


def _paint(style: Style, role: Role, colour: str | None = None) -> str:
    parts: list[str] = []
    if role in (Role.BACKGROUND, Role.PENDING, Role.FIRING):
        parts.append(f'fill="{style.fill or "none"}"')
        if style.opacity < 1:
            parts.append(f'fill-opacity="{style.opacity:g}"')
        if style.stroke:
            parts.append(f'stroke="{style.stroke}"')
        return " ".join(parts)
    parts.append('fill="none"')
    parts.append(f'stroke="{colour or style.stroke or "#000"}" stroke-width="{style.width:g}"')
    if style.dash:
        parts.append(f'stroke-dasharray="{",".join(f"{d:g}" for d in style.dash)}"')
    return " ".join(parts)


def _rect(item: Rect) -> str:
    style = PALETTE[item.role]
    return (
        f'<rect class="{item.role}" x="{item.x:.1f}" y="{item.y:.1f}" width="{item.w:.1f}" '
        f'height="{item.h:.1f}" {_paint(style, item.role)}/>'
    )


def _path(item: Path) -> str:
    style = PALETTE[item.role]
    points = " ".join(f"{x:g},{y:g}" for x, y in item.points)
    series = f' data-series="{item.series}"' if item.series is not None else ""
    join = ' stroke-linejoin="round"' if item.role is Role.SERIES else ""
    paint = _paint(style, item.role, item.colour)
    return f'<polyline class="{item.role}"{series} points="{points}" {paint}{join}/>'


def _text(item: Text) -> str:
    style = PALETTE[item.role]
    colour = style.fill or style.stroke or "#000"
    return (
        f'<text class="{item.role}" x="{item.x:.1f}" y="{item.y:.1f}" text-anchor="{item.anchor}" '
        f'font-size="{style.font_size:g}" fill="{colour}">{escape(item.text)}</text>'
    )


def render_svg(drawing: Drawing, css_class: str = "chart") -> str:
    """The drawing as one <svg> element, scaled to its container (viewBox) and titled for
    screen readers."""
    body = []
    for item in drawing.items:
        if isinstance(item, Rect):
            body.append(_rect(item))
        elif isinstance(item, Path):
            body.append(_path(item))
        else:
            body.append(_text(item))
    points = ",".join(str(n) for n in drawing.series_points)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class={quoteattr(css_class)} role="img" '
        f'viewBox="0 0 {drawing.width} {drawing.height}" width="{drawing.width}" height="{drawing.height}" '
        f'preserveAspectRatio="xMidYMid meet" font-family="system-ui, sans-serif" data-points="{points}">'
        f"<title>{escape(drawing.title)}</title>" + "".join(body) + "</svg>"
    )
