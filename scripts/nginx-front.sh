#!/usr/bin/env bash
# Runs a real nginx on 127.0.0.1 as the TLS front of a samizdat server's
# WebSocket listener (`samizdat serve --ws-listen`), with the location block
# docs/fronting.md recommends. For crates/samizdat/tests/it/fronting.rs and for
# trying fronting by hand. It writes a self-signed certificate (unless DIR
# already holds cert.pem and key.pem) and an nginx.conf into DIR and runs
# nginx in the foreground until this script is stopped (SIGTERM/SIGINT) or
# the process that started it goes away.
#
#   scripts/nginx-front.sh DIR PORT UPSTREAM PATH
#
#   PORT      nginx's TLS port on 127.0.0.1
#   UPSTREAM  the samizdat WebSocket listener, HOST:PORT (e.g. 127.0.0.1:8081)
#   PATH      the WebSocket path (samizdat's --ws-path), e.g. /3f9ac2…
#
# Every other path is served from DIR/html as a small static site (so a
# wrong path gets nginx's own 404). FRONT_DOMAIN (default localhost) is
# the certificate's name. Needs the Debian packages `nginx` (or
# nginx-light) and `openssl`. Listens on 127.0.0.1 only.
set -euo pipefail

usage="usage: nginx-front.sh DIR PORT UPSTREAM PATH"
dir=${1:?$usage}
port=${2:?$usage}
upstream=${3:?$usage}
path=${4:?$usage}
domain=${FRONT_DOMAIN:-localhost}

case "$path" in
/*) ;;
*)
    echo "nginx-front.sh: PATH must start with /, not '$path'" >&2
    exit 2
    ;;
esac
case "$upstream" in
127.*:*) ;;
*)
    echo "nginx-front.sh: UPSTREAM must be on 127.0.0.0/8 (HOST:PORT), not '$upstream'" >&2
    exit 2
    ;;
esac

me=nginx-front.sh
# shellcheck source=scripts/nginx-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/nginx-common.sh"

nginx_find nginx-light
nginx_prepare_dir
if [ ! -s "$dir/cert.pem" ] || [ ! -s "$dir/key.pem" ]; then
    nginx_need_openssl
    # CA:FALSE: rustls refuses a CA certificate as a server's own.
    nginx_self_signed -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -addext "basicConstraints=critical,CA:FALSE"
fi
nginx_write_site

http_extra='
    # "Connection: upgrade" only when the client asked for an upgrade.
    map $http_upgrade $connection_upgrade {
        default upgrade;
        '"''"'      close;
    }'
server_extra="

        # The samizdat server (docs/fronting.md).
        location = $path {
            proxy_pass http://$upstream;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }"
nginx_write_conf scripts/nginx-front.sh 1024 "$http_extra" "$server_extra"
nginx_run
