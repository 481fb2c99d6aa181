#!/usr/bin/env bash
# The test command: install what is missing, start RabbitMQ and PostgreSQL if they are not
# running, then run pytest (arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
export LIENTHONG_AMQP_URL=${LIENTHONG_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
export LIENTHONG_MGMT_URL=${LIENTHONG_MGMT_URL:-http://guest:guest@127.0.0.1:15672}
export LIENTHONG_PG_URL=${LIENTHONG_PG_URL:-postgresql://lienthong:lienthong@127.0.0.1:5432/lienthong}
scripts/bootstrap.sh
scripts/ensure-rabbitmq.sh
scripts/ensure-postgres.sh
# CI starts from the broker a new machine has: nothing an aborted earlier run left is relied upon.
# (PostgreSQL: the tests create their databases and drop them, see tests/conftest.py.)
if [ -n "${CI:-}" ]; then .venv/bin/python -m tests.cleanup; fi
exec .venv/bin/python -m pytest "$@"
