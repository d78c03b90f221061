# Shared by scripts/nginx-front.sh and scripts/nginx-cover.sh (sourced, not
# run): find nginx and openssl, prepare DIR with a self-signed certificate
# and a small static site, write an nginx.conf with one TLS server on
# 127.0.0.1, and run nginx in the foreground until the calling script is
# stopped (SIGTERM/SIGINT/SIGHUP) or the process that started it goes away.
#
# The callers set: me (the script's name, for messages), dir, port, domain.

# Sets nginx_bin, or exits 127 naming the Debian package $1.
nginx_find() {
    nginx_bin=$(command -v nginx || true)
    [ -n "$nginx_bin" ] || nginx_bin=/usr/sbin/nginx
    if [ ! -x "$nginx_bin" ]; then
        echo "$me: nginx is not installed (apt-get install -y $1)" >&2
        exit 127
    fi
}

nginx_need_openssl() {
    command -v openssl >/dev/null || {
        echo "$me: openssl is not installed (apt-get install -y openssl)" >&2
        exit 127
    }
}

# Creates $dir/html (with index.html) and $dir/tmp; makes $dir absolute.
nginx_prepare_dir() {
    mkdir -p "$dir/html" "$dir/tmp"
    dir=$(cd "$dir" && pwd)
    # Workers run as an unprivileged user when nginx starts as root: let
    # them read the page.
    chmod 755 "$dir" "$dir/html"
}

nginx_write_site() {
    cat >"$dir/html/index.html" <<'EOF'
<!DOCTYPE html>
<html><head><title>Welcome</title></head>
<body><h1>It works</h1><p>A quiet little site.</p></body></html>
EOF
}

# A self-signed certificate for $domain in $dir/cert.pem and $dir/key.pem;
# the arguments choose the key (e.g. `-newkey rsa:2048`) and add extensions.
nginx_self_signed() {
    openssl req -x509 "$@" -nodes -days 7 -subj "/CN=$domain" \
        -addext "subjectAltName=DNS:$domain" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
}

# Writes $dir/nginx.conf: one TLS server on 127.0.0.1:$port for $domain
# serving $dir/html.
#   $1  what the header comment says after "Written by"
#   $2  worker_connections
#   $3  more lines at the end of the http block (before the server)
#   $4  more lines at the end of the server block
nginx_write_conf() {
    cat >"$dir/nginx.conf" <<EOF
# Written by $1.
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events {
    worker_connections $2;
}
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    types { text/html html; }
    default_type application/octet-stream;$3
    server {
        listen 127.0.0.1:$port ssl;
        server_name $domain;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $dir/html;$4
    }
}
EOF
}

# Checks the configuration, then runs nginx until this script is stopped or
# its parent goes away; does not return.
nginx_run() {
    "$nginx_bin" -p "$dir/" -c "$dir/nginx.conf" -t -q

    "$nginx_bin" -p "$dir/" -c "$dir/nginx.conf" &
    nginx_pid=$!
    local parent=$PPID
    # SIGQUIT would wait for open connections; SIGTERM is nginx's fast stop.
    trap nginx_stop TERM INT HUP
    # Stop with the parent (a test that was killed leaves no nginx behind).
    while kill -0 "$parent" 2>/dev/null && kill -0 "$nginx_pid" 2>/dev/null; do
        sleep 1 &
        wait $! || true
    done
    nginx_stop
}

nginx_stop() {
    kill -TERM "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    exit 0
}
