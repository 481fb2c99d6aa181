"""lienthong: a relay for official electronic documents (edXML, QCVN 102:2016) on RabbitMQ.

The core (edXML model, parsing, schema, signatures, trust, topology,
validation) needs no broker; ``broker.transport`` is the only module that
imports pika.
"""

__version__ = "0.1.0"
