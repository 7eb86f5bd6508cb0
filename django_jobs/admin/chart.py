"""The throughput chart of the queues page, drawn on the server as SVG: it needs no
JavaScript, no library and no network, and prints as it shows."""

from __future__ import annotations

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from django_jobs import payload
from django_jobs.broker.stats import Bucket

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 160, 44, 22, 8
SERIES = (("succeeded", "#2e7d32"), ("failed", "#c62828"))


def throughput_svg(buckets: list[Bucket], step_label: str) -> SafeString:
    """Succeeded (green) and failed attempts (red, stacked) per bucket, oldest left."""
    peak = max((sum(b.get(name) for name, _ in SERIES) for b in buckets), default=0)
    top = max(peak, 1)
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP
    bar_w = plot_w / max(len(buckets), 1)
    bars = []
    for i, bucket in enumerate(buckets):
        y: float = TOP + plot_h
        for name, colour in SERIES:
            value = bucket.get(name)
            if not value:
                continue
            h = plot_h * value / top
            y -= h
            bars.append(
                (
                    f"{LEFT + i * bar_w + 0.5:.1f}",
                    f"{y:.1f}",
                    f"{max(bar_w - 1, 0.5):.1f}",
                    f"{h:.1f}",
                    colour,
                    f"{_when(bucket.start_ms)}: {value} {name}",
                )
            )
    rects = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
        bars,
    )
    labels = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="10" text-anchor="{}">{}</text>',
        [
            (LEFT, HEIGHT - 6, "start", _when(buckets[0].start_ms) if buckets else ""),
            (WIDTH - 4, HEIGHT - 6, "end", "now"),
            (LEFT - 4, TOP + 8, "end", peak),
            (LEFT - 4, TOP + plot_h, "end", 0),
        ],
    )
    legend = format_html_join(
        "",
        '<tspan fill="{}">&#9632;</tspan> {} ',
        [(colour, name) for name, colour in SERIES],
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" '
        'role="img" aria-label="{aria}" style="max-width:{w}px">'
        '<line x1="{l}" y1="{base}" x2="{r}" y2="{base}" stroke="#999"/>{rects}{labels}'
        '<text x="{mid}" y="{legend_y}" font-size="10" text-anchor="middle">{legend}'
        "(per {step})</text></svg>",
        w=WIDTH,
        h=HEIGHT,
        aria=f"Succeeded and failed attempts per {step_label}",
        l=LEFT,
        r=WIDTH - 4,
        base=TOP + plot_h,
        rects=rects,
        labels=labels,
        mid=LEFT + plot_w / 2,
        legend_y=HEIGHT - 6,
        legend=legend,
        step=step_label,
    )


def _when(ms: int) -> str:
    moment = payload.ms_to_datetime(ms)
    return timezone.localtime(moment).strftime("%H:%M") if moment else ""
