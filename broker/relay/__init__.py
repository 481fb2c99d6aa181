"""The relay's I/O: AMQP transport, the hub worker, the state store, provisioning, assembly."""
