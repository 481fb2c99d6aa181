"""lienthong: a relay for official electronic documents (edXML, QCVN 102:2016) on RabbitMQ.

Four rooms, each importing only from the rooms below it:

- ``broker.core``: pure, no I/O library: parsing, schema, the edXML model, signatures, trust,
  topology, routing, validation, the hop decision, hop records, receipts, audit-log entries and
  ``wire`` (the names on the wire);
- ``broker.relay``: what does I/O for a hub: ``transport`` (the only pika user), the worker, the
  state store, broker provisioning, assembly of a hub, metrics, supervision;
- ``broker.ops``: what operators and auditors run: queue status and parking, reports, the
  dashboard, audit-trail and evidence commands;
- ``broker.cli``: the ``lienthong`` command, one module per command group.

``broker.settings`` and ``broker.logs`` serve every room.
"""

__version__ = "0.1.0"
