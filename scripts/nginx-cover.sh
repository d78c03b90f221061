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

nginx_bin=$(command -v nginx || true)
[ -n "$nginx_bin" ] || nginx_bin=/usr/sbin/nginx
if [ ! -x "$nginx_bin" ]; then
    echo "nginx-cover.sh: nginx is not installed (apt-get install -y nginx)" >&2
    exit 127
fi
command -v openssl >/dev/null || {
    echo "nginx-cover.sh: openssl is not installed (apt-get install -y openssl)" >&2
    exit 127
}

mkdir -p "$dir/html" "$dir/tmp"
dir=$(cd "$dir" && pwd)
# Workers run as an unprivileged user when nginx starts as root: let them
# read the page.
chmod 755 "$dir" "$dir/html"

if [ ! -s "$dir/cert.pem" ]; then
    # RSA, not ECDSA: an RSA signature has a fixed length, so two TLS
    # handshakes with this server have records of the same sizes and the
    # prober can compare them.
    openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=$domain" \
        -addext "subjectAltName=DNS:$domain" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
fi
cat >"$dir/html/index.html" <<'EOF'
<!DOCTYPE html>
<html><head><title>Welcome</title></head>
<body><h1>It works</h1><p>A quiet little site.</p></body></html>
EOF

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

cat >"$dir/nginx.conf" <<EOF
# Written by scripts/nginx-cover.sh ($timers timers).
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events {
    # nginx's default of 512 is too few for the prober's concurrent probes.
    worker_connections 4096;
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
    server {
        listen 127.0.0.1:$port ssl;
        server_name $domain;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $dir/html;$extra
    }
}
EOF

"$nginx_bin" -p "$dir/" -c "$dir/nginx.conf" -t -q

"$nginx_bin" -p "$dir/" -c "$dir/nginx.conf" &
nginx_pid=$!
parent=$PPID
stop() {
    # SIGQUIT would wait for open connections; SIGTERM is nginx's fast stop.
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
