"""What a hub could not hand to a neighbour whose broker was away, and its forwarding once the
link is back.

The hubs of one network run on their operators' own brokers, and one of them being away (a
province's broker stopped, the line between two operators cut) must not stop the others.  A copy
for a neighbour goes to its link while the link is up.  While it is down the pipeline puts the
copy, judged and claimed like any other, in the hub's own ``out.<neighbour>`` queue with its
headers and message id (:meth:`Outbound.put`): the hub's broker confirms it, the claim is marked,
the delivery acked, and the hub goes on serving everyone else.

When the link comes back the worker follows that queue on its consumer's channel
(:meth:`Outbound.up`): each message is published to the neighbour as it stands and acked once the
neighbour's broker confirmed it.  A link lost in the middle leaves what it had not confirmed in
the queue for the next time (:meth:`Outbound.down`); a message sent twice that way is a twin,
which the neighbour's claims drop (its message id and bytes are the same).
"""

from __future__ import annotations

from broker.core import wire
from broker.relay.hooks import Hook
from broker.relay.transport import LOCAL, Confirmed, Outgoing, Received, Session

REFUSED_PAUSE = 1.0
"""Seconds before a message the neighbour's broker refused (a full queue there) is tried again."""


class Outbound:
    """The outbound queues of hub ``hub`` over one session at a time."""

    def __init__(self, hub: str, names: wire.Names, hooks: Hook) -> None:
        self.hub, self.names, self.hooks = hub, names, hooks
        self.session: Session | None = None
        self._following: set[str] = set()
        self._back: dict[str, list[int]] = {}
        """Deliveries of a followed queue whose link went down: handed back once it is unfollowed."""

    def attach(self, session: Session) -> None:
        """A new session: nothing followed yet (what the last one held went back to the queues)."""
        self.session, self._following, self._back = session, set(), {}

    def put(self, neighbour: str, message: Outgoing, confirmed: Confirmed) -> None:
        """Keep ``message`` (a copy for ``neighbour``, whose link is down) in its outbound queue."""
        assert self.session is not None
        self.hooks.kept(neighbour)
        self.session.publishers[LOCAL].publish(
            Outgoing(wire.EX_OUTBOUND, neighbour, message.body, message.message_id, self.names.hub_user(self.hub),
                     message.headers), confirmed)

    def up(self, neighbour: str) -> None:
        """The link to ``neighbour`` is up: forward what waits for it."""
        if self.session is None or neighbour in self._following:
            return
        self._following.add(neighbour)
        self.session.consumer.follow(wire.outbound_queue(neighbour))

    def down(self, neighbour: str) -> None:
        """The link to ``neighbour`` went down: stop forwarding; what it had not confirmed goes back."""
        if self.session is None or neighbour not in self._following:
            return
        self._following.discard(neighbour)
        self.session.consumer.unfollow(wire.outbound_queue(neighbour))
        for tag in self._back.pop(neighbour, []):
            self.session.consumer.requeue(tag)

    def forward(self, message: Received) -> None:
        """A message of an outbound queue: to its neighbour, acked once that broker confirmed it."""
        assert self.session is not None
        session, neighbour = self.session, message.routing_key
        link = session.publishers.get(neighbour)
        if link is None or not link.ready:
            self._hand_back(neighbour, message.delivery_tag)
            return

        def confirmed(ok: bool) -> None:
            if ok:
                self.hooks.forwarded(neighbour)
                session.consumer.ack_all([message.delivery_tag])
            else:
                self._hand_back(neighbour, message.delivery_tag)

        link.publish(Outgoing(wire.link_exchange(self.hub), "", message.body, message.message_id,
                              self.names.link_user(self.hub), wire.without_broker_headers(message.headers)),
                     confirmed)

    def _hand_back(self, neighbour: str, tag: int) -> None:
        """Back to its queue: at once if the queue is not followed (nothing delivers it again
        here); once :meth:`down` has stopped following it if its link is down; after
        :data:`REFUSED_PAUSE` if the link is up and the neighbour's broker refused it."""
        session = self.session
        assert session is not None
        link = session.publishers.get(neighbour)
        if neighbour not in self._following:
            session.consumer.requeue(tag)
        elif link is None or not link.ready:
            self._back.setdefault(neighbour, []).append(tag)
        else:
            session.loop.call_later(REFUSED_PAUSE, lambda: session.consumer.requeue(tag))
