"""Checks on matplotlib figures that a reader would make: nothing overlaps, fonts agree."""

from __future__ import annotations

import itertools

import numpy as np


def text_artists(fig) -> list[tuple[str, object]]:
    """Every visible title, axis label, colour-bar label, suptitle and legend, named."""
    out = []
    if fig._suptitle is not None and fig._suptitle.get_text():
        out.append(("suptitle", fig._suptitle))
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        for kind, t in (("title", ax.title), ("left title", ax._left_title),
                        ("xlabel", ax.xaxis.label), ("ylabel", ax.yaxis.label)):
            if t.get_text() and t.get_visible():
                out.append((f"axes {i} {kind} {t.get_text()[:40]!r}", t))
        if ax.get_legend() is not None:
            out.append((f"axes {i} legend", ax.get_legend()))
    out += [(f"figure legend {i}", lg) for i, lg in enumerate(fig.legends)]
    return out


def assert_readable(fig, label_size: float = 9.0) -> None:
    """No two titles, axis labels, colour-bar labels, legends or the suptitle overlap once
    drawn, and every title and axis label has one font size (:data:`plots.STYLE`)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    items = [(name, a.get_window_extent(renderer)) for name, a in text_artists(fig)]
    clashes = [(a, b) for (a, ba), (b, bb) in itertools.combinations(items, 2)
               if ba.overlaps(bb)]
    assert not clashes, f"overlapping text: {clashes}"
    sizes = {name: a.get_fontsize() for name, a in text_artists(fig)
             if "legend" not in name and name != "suptitle"}
    odd = {k: v for k, v in sizes.items() if v != label_size}
    assert not odd, f"titles and labels not at {label_size} pt: {odd}"


def colour_distance(a, b) -> float:
    """Euclidean distance of two matplotlib colours in RGB (0 … √3)."""
    from matplotlib.colors import to_rgb

    return float(np.linalg.norm(np.subtract(to_rgb(a), to_rgb(b))))
