#!/usr/bin/env bash
# The test command: install what is missing, start RabbitMQ and PostgreSQL if they are not
# running, then run pytest (arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
export LIENTHONG_AMQP_URL=${LIENTHONG_AMQP_URL:-amqps://127.0.0.1:5671/}
export LIENTHONG_TRANSPORT_CA=${LIENTHONG_TRANSPORT_CA:-/var/lib/lienthong/transport-ca}
export LIENTHONG_PG_URL=${LIENTHONG_PG_URL:-postgresql://lienthong:lienthong@127.0.0.1:5432/lienthong}
scripts/bootstrap.sh
scripts/ensure-rabbitmq.sh
# the broker's admin account, made by ensure-rabbitmq.sh (unless another is given)
if [ -z "${LIENTHONG_MGMT_URL:-}" ]; then set -a; . "${LIENTHONG_ADMIN_FILE:-/var/lib/lienthong/broker-admin.env}"; set +a; fi
scripts/ensure-postgres.sh
# CI starts from the broker a new machine has: nothing an aborted earlier run left is relied upon.
# (PostgreSQL: the tests create their databases and drop them, see tests/conftest.py.)
if [ -n "${CI:-}" ]; then .venv/bin/python -m tests.cleanup; fi
exec .venv/bin/python -m pytest "$@"
