#!/usr/bin/env bash
# Runs a real nginx on 127.0.0.1 as the TLS front of a samizdat server's
# WebSocket listener (`samizdat serve --ws-listen`), with the location block
# docs/fronting.md recommends. For crates/samizdat/tests/fronting.rs and for
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

nginx_bin=$(command -v nginx || true)
[ -n "$nginx_bin" ] || nginx_bin=/usr/sbin/nginx
if [ ! -x "$nginx_bin" ]; then
    echo "nginx-front.sh: nginx is not installed (apt-get install -y nginx-light)" >&2
    exit 127
fi

mkdir -p "$dir/html" "$dir/tmp"
dir=$(cd "$dir" && pwd)
chmod 755 "$dir" "$dir/html"

if [ ! -s "$dir/cert.pem" ] || [ ! -s "$dir/key.pem" ]; then
    command -v openssl >/dev/null || {
        echo "nginx-front.sh: openssl is not installed (apt-get install -y openssl)" >&2
        exit 127
    }
    # CA:FALSE: rustls refuses a CA certificate as a server's own.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
        -subj "/CN=$domain" -addext "subjectAltName=DNS:$domain" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
fi
cat >"$dir/html/index.html" <<'EOF'
<!DOCTYPE html>
<html><head><title>Welcome</title></head>
<body><h1>It works</h1><p>A quiet little site.</p></body></html>
EOF

cat >"$dir/nginx.conf" <<EOF
# Written by scripts/nginx-front.sh.
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events {
    worker_connections 1024;
}
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    types { text/html html; }
    default_type application/octet-stream;
    # "Connection: upgrade" only when the client asked for an upgrade.
    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      close;
    }
    server {
        listen 127.0.0.1:$port ssl;
        server_name $domain;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $dir/html;

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
        }
    }
}
EOF

"$nginx_bin" -p "$dir/" -c "$dir/nginx.conf" -t -q

"$nginx_bin" -p "$dir/" -c "$dir/nginx.conf" &
nginx_pid=$!
parent=$PPID
stop() {
    kill -TERM "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    exit 0
}
trap stop TERM INT HUP
# Stop with the parent (a test that was killed leaves no nginx behind).
while kill -0 "$parent" 2>/dev/null && kill -0 "$nginx_pid" 2>/dev/null; do
    sleep 1 &
    wait $! || true
done
stop
