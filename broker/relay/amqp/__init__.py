"""The AMQP transport: RabbitMQ over TLS with client certificates.  The only code that imports pika.

- :mod:`.params`: connection parameters from ``amqps://`` URLs (TLS material in :mod:`.tls`,
  cluster nodes), pika's errors described and turned into lienthong's;
- :mod:`.connection`: how lienthong's connections write (one write per loop turn) and close
  (TLS ``close_notify`` first), set on each connection it opens, never on pika itself;
- :mod:`.loop`: the hub worker's event loop;
- :mod:`.links`: the worker's asynchronous publisher (a window of confirms) and consumer;
- :mod:`.session`: :class:`broker.relay.transport.Transport` over those;
- :mod:`.blocking`: one call at a time, for the CLI, set-up, operators and the SDK.
"""
