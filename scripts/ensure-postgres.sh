#!/usr/bin/env bash
# Make sure PostgreSQL answers and $LIENTHONG_PG_URL (role and database "lienthong") works.
# Keeps a running server; on this machine installs (Debian) and starts one otherwise.
set -euo pipefail
URL=${LIENTHONG_PG_URL:-postgresql://lienthong:lienthong@127.0.0.1:5432/lienthong}
say() { echo "ensure-postgres: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

read -r HOST PORT < <(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 5432)' "$URL")
answers() { timeout 3 bash -c "</dev/tcp/$HOST/$PORT" 2>/dev/null; }

if ! answers; then
  case "$HOST" in 127.*|localhost) ;; *) say "nothing answers on $HOST:$PORT and it is not this machine"; exit 1;; esac
  if ! command -v pg_ctlcluster >/dev/null; then
    say "installing Debian's postgresql"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  VERSION=$(ls /etc/postgresql | sort -V | tail -1)
  say "starting PostgreSQL $VERSION"
  as_root pg_ctlcluster --skip-systemctl-redirect "$VERSION" main start
  for _ in $(seq 60); do answers && break; sleep 1; done
fi

if ! timeout 10 psql "$URL" -Atqc 'select 1' >/dev/null 2>&1; then
  say "creating role and database lienthong"
  as_postgres psql -qAt -v ON_ERROR_STOP=1 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lienthong') THEN
    CREATE ROLE lienthong LOGIN CREATEDB PASSWORD 'lienthong';
  END IF;
END $$;
SQL
  as_postgres psql -qAt -c "SELECT 1 FROM pg_database WHERE datname = 'lienthong'" | grep -q 1 \
    || as_postgres createdb -O lienthong lienthong
fi
timeout 10 psql "$URL" -Atqc 'select 1' >/dev/null || { say "cannot connect with $URL"; exit 1; }
say "ready"
