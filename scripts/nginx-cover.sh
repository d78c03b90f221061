#!/usr/bin/env bash
# Runs a real nginx as a cover site on 127.0.0.1, for the differential
# prober (crates/samizdat/tests/differential.rs) and for trying a cover by
# hand. It writes a self-signed certificate and a minimal nginx.conf into
# DIR and runs nginx in the foreground until this script is stopped
# (SIGTERM/SIGINT) or the process that started it goes away.
#
#   scripts/nginx-cover.sh DIR PORT [default|short]
#
#   default  nginx's own compiled-in timeouts, nothing set: 60 s to send a
#            request (and, in nginx 1.22, to finish the TLS handshake),
#            75 s keep-alive, 5 s/30 s lingering close. This is what an
#            operator who installs nginx and changes nothing runs.
#   short    the same server with every timer at 2-3 s, so that tests of
#            idle behaviour finish quickly.
#
# Needs the Debian packages `nginx` and `openssl`
# (apt-get install -y nginx openssl). Listens on 127.0.0.1 only.
set -euo pipefail

dir=${1:?usage: nginx-cover.sh DIR PORT [default|short]}
port=${2:?usage: nginx-cover.sh DIR PORT [default|short]}
timers=${3:-default}
domain=${COVER_DOMAIN:-cover.localhost}

me=nginx-cover.sh
# shellcheck source=scripts/nginx-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/nginx-common.sh"

nginx_find nginx
nginx_need_openssl
nginx_prepare_dir
if [ ! -s "$dir/cert.pem" ]; then
    # RSA, not ECDSA: an RSA signature has a fixed length, so two TLS
    # handshakes with this server have records of the same sizes and the
    # prober can compare them.
    nginx_self_signed -newkey rsa:2048
fi
nginx_write_site

case "$timers" in
default) extra="" ;;
short)
    extra="
        client_header_timeout 2s;
        client_body_timeout 2s;
        send_timeout 2s;
        keepalive_timeout 3s;
        lingering_time 3s;
        lingering_timeout 1s;"
    ;;
*)
    echo "nginx-cover.sh: timers must be 'default' or 'short', not '$timers'" >&2
    exit 2
    ;;
esac

# nginx's default of 512 worker connections is too few for the prober's
# concurrent probes.
nginx_write_conf "scripts/nginx-cover.sh ($timers timers)" 4096 "" "$extra"
nginx_run
