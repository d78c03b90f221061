#!/usr/bin/env bash
# Interop suite: real Telegram client libraries (TDLib via tdjson, Telethon)
# against samizdat and the testkit's fake DC, all on 127.0.0.1.
#
# The tests run inside a fresh network namespace whose only interface is
# loopback (`unshare -n`): TDLib contacts real Telegram DCs by itself once
# initialised, and nothing may leave the machine.
#
# Usage: tests/interop/run.sh [pytest args...]
# Env:   SAMIZDAT_BIN_DIR       directory with samizdat and samizdat-testkit
#                               (default target/debug, built here with cargo)
#        SAMIZDAT_INTEROP_VENV  venv to use/create (default target/interop-venv)
#        PYTHON                 interpreter for creating the venv (default python3)
#        SAMIZDAT_TDLIB_VERBOSITY  TDLib log level on stderr (default 1)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

for tool in unshare ip; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "run.sh: '$tool' not found (Debian: apt-get install util-linux iproute2)" >&2
        exit 2
    fi
done

venv=${SAMIZDAT_INTEROP_VENV:-$repo/target/interop-venv}
req=tests/interop/requirements.txt
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
stamp="$venv/.interop-requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req"
    echo "$want" >"$stamp"
fi

if [ -z "${SAMIZDAT_BIN_DIR:-}" ]; then
    cargo build --workspace --bins --quiet
fi

# Inside the namespace: bring loopback up, then run pytest. Root can create a
# network namespace directly; anyone else needs a user namespace as well.
unshare_args=(--net)
if [ "$(id -u)" != 0 ]; then
    unshare_args+=(--map-root-user)
fi

export PYTHONDONTWRITEBYTECODE=1
exec unshare "${unshare_args[@]}" -- sh -c '
    set -e
    ip link set lo up
    py=$1; shift
    exec "$py" -m pytest -p no:cacheprovider --timeout=120 -ra tests/interop "$@"
' sh "$venv/bin/python" "$@"
