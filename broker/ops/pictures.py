"""The dashboard's pictures, as inline SVG (no script, no file): the hub tree with each hub
coloured by its state, and a small bar chart of what a hub passed on and refused over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from broker.core.topology import Topology
from broker.i18n import N_, _
from broker.ops.queues import HubStatus

STATES = {"ok": ("#2E7D32", N_("working")), "warning": ("#F9A825", N_("needs attention")),
          "down": ("#C62828", N_("stopped")), "unknown": ("#9E9E9E", N_("not set up")),
          "away": ("#607D8B", N_("not visible from here"))}
"""Each state's colour and name: serving with nothing to watch; serving with a warning (parked
messages, a backlog, an old inbox, a certificate near its end); no worker consumes the ingress;
no ingress queue at all; its broker cannot be read from here (another operator's, or away)."""
PASSED, REFUSED = "#1565C0", "#C62828"
BOX_W, BOX_H, GAP_X, GAP_Y = 250, 62, 24, 46


def _short(name: str, most: int = 30) -> str:
    return name if len(name) <= most else name[:most - 1] + "…"


def state(st: HubStatus) -> str:
    if st.unreadable:
        return "away"
    if st.ingress is None:
        return "unknown"
    if st.ingress.consumers == 0:
        return "down"
    return "warning" if st.warnings else "ok"


@dataclass(frozen=True)
class _Node:
    hub: str
    x: float
    y: float


def _place(topology: Topology) -> list[_Node]:
    """Hubs top-down: the root on top, each parent centred over its children, leaves side by side."""
    children: dict[str | None, list[str]] = {}
    for h in sorted(topology.hubs.values(), key=lambda h: h.hub_id):
        children.setdefault(h.parent, []).append(h.hub_id)
    nodes: list[_Node] = []
    next_leaf = [0.0]

    def walk(hub: str, depth: int) -> float:
        kids = children.get(hub, [])
        if kids:
            xs = [walk(k, depth + 1) for k in kids]
            x = (xs[0] + xs[-1]) / 2
        else:
            x = next_leaf[0]
            next_leaf[0] += BOX_W + GAP_X
        nodes.append(_Node(hub, x, depth * (BOX_H + GAP_Y)))
        return x

    for root in children.get(None, []):
        walk(root, 0)
    return nodes


def hub_tree(topology: Topology, status: dict[str, HubStatus]) -> str:
    """The tree of hubs, each a box in its state's colour, linking to its row below."""
    nodes = _place(topology)
    where = {n.hub: n for n in nodes}
    width = max(n.x for n in nodes) + BOX_W + 2
    height = max(n.y for n in nodes) + BOX_H + 2
    title = escape(_("The hub tree"))
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' class='tree' role='img' viewBox='-1 -1 {width:.0f} "
           f"{height:.0f}' width='{width:.0f}' height='{height:.0f}'><title>{title}</title>"]
    for n in nodes:
        parent = topology.hubs[n.hub].parent
        if parent in where:
            p = where[parent]
            out.append(f"<line x1='{p.x + BOX_W / 2:.0f}' y1='{p.y + BOX_H:.0f}' x2='{n.x + BOX_W / 2:.0f}' "
                       f"y2='{n.y:.0f}' stroke='#607D8B' stroke-width='2'/>")
    for n in nodes:
        st = status.get(n.hub)
        kind = state(st) if st else "unknown"
        colour, label = STATES[kind]
        said = escape(_(label))
        hub = topology.hubs[n.hub]
        figures = _("parked {parked} · waiting {waiting}", parked=st.parked if st else 0,
                    waiting=st.ingress.messages if st and st.ingress else 0)
        text = "#222" if kind == "warning" else "#fff"
        out.append(f"<a href='#hub-{escape(n.hub)}'><g class='hub' data-hub='{escape(n.hub)}' data-state='{kind}'>"
                   f"<title>{escape(hub.name)}: {said}</title>"
                   f"<rect x='{n.x:.0f}' y='{n.y:.0f}' width='{BOX_W}' height='{BOX_H}' rx='8' fill='{colour}'/>"
                   f"<text x='{n.x + 10:.0f}' y='{n.y + 20:.0f}' fill='{text}' font-size='13' font-weight='bold'>"
                   f"{escape(_short(hub.name))}</text>"
                   f"<text x='{n.x + 10:.0f}' y='{n.y + 37:.0f}' fill='{text}' font-size='12'>{escape(n.hub)} · "
                   f"{said}</text>"
                   f"<text x='{n.x + 10:.0f}' y='{n.y + 53:.0f}' fill='{text}' font-size='12'>{escape(figures)}</text>"
                   f"</g></a>")
    out.append("</svg>")
    return "".join(out)


def legend() -> str:
    return "".join("<span class='key'><span class='swatch' style='background:" + colour + "'></span>"
                   + escape(_(name)) + "</span>" for colour, name in STATES.values())


def bars(passed: list[int], refused: list[int], *, width: int = 288, height: int = 44) -> str:
    """One slot a bar: passed on (blue) below, refused (red) stacked on top; the tallest slot fills
    the height, and a label says the total of each."""
    slot = width / max(1, len(passed))
    top = max([p + r for p, r in zip(passed, refused, strict=True)] + [1])
    title = escape(_("passed on {passed}, refused {refused}", passed=sum(passed), refused=sum(refused)))
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' class='bars' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}' role='img'><title>{title}</title>"
           f"<line x1='0' y1='{height - 0.5}' x2='{width}' y2='{height - 0.5}' stroke='#999'/>"]
    for n, (p, r) in enumerate(zip(passed, refused, strict=True)):
        x = n * slot + 1
        hp, hr = (height - 2) * p / top, (height - 2) * r / top
        if p:
            out.append(f"<rect x='{x:.1f}' y='{height - 1 - hp:.1f}' width='{slot - 2:.1f}' height='{hp:.1f}' "
                       f"fill='{PASSED}'/>")
        if r:
            out.append(f"<rect x='{x:.1f}' y='{height - 1 - hp - hr:.1f}' width='{slot - 2:.1f}' height='{hr:.1f}' "
                       f"fill='{REFUSED}'/>")
    out.append("</svg>")
    return "".join(out)
