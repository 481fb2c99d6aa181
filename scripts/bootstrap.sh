#!/usr/bin/env bash
# Install what lienthong needs on a Debian machine: xmlsec1, librabbitmq-dev with gcc and chromium
# (interop and dashboard tests), softhsm2 (a PKCS#11 token for the token-signing tests), fonts-dejavu-core
# (the font the PDF report embeds), poppler-utils (the tests read the PDF back), prometheus (for promtool,
# which checks and tests monitoring/'s alert rules), a JDK (a Java document system's client in the axis
# protocol tests), a virtualenv in .venv with the package and its test dependencies.  Quick when all is
# already there.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "bootstrap: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }
missing=()
command -v xmlsec1 >/dev/null || missing+=(xmlsec1)
command -v psql >/dev/null || missing+=(postgresql-client)
[ -f /usr/include/amqp_ssl_socket.h ] || missing+=(librabbitmq-dev)
command -v gcc >/dev/null || missing+=(gcc)
command -v chromium >/dev/null || missing+=(chromium)
command -v softhsm2-util >/dev/null || missing+=(softhsm2)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
command -v pdftoppm >/dev/null || missing+=(poppler-utils)
command -v promtool >/dev/null || missing+=(prometheus)
{ command -v javac && command -v keytool; } >/dev/null || missing+=(openjdk-17-jdk-headless)
# The interpreter: LIENTHONG_PYTHON if set, else Debian's own python3 (built with profile-guided and
# link-time optimization, libpython linked in: the hubs' Python runs 15-20% faster on it than on a
# plain build from source such as pyenv's, docs/performance.md), else the python3 found first.
python=${LIENTHONG_PYTHON:-}
if [ -z "$python" ]; then
  for candidate in /usr/bin/python3 python3; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then python=$candidate; break; fi
  done
fi
python=${python:-python3}
"$python" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $python"
  "$python" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  say "installing lienthong and its dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
