#!/usr/bin/env bash
# Captures real browser ClientHellos into crates/wire/templates/<browser>.hellos.
#
# Usage: scripts/capture-hello/capture.sh [chrome|firefox|all] [COUNT]
#
# For each browser: installs it with apt-get if missing (Debian's chromium /
# firefox-esr), starts listener.py on 127.0.0.1:$PORT, then starts the
# browser headless with a fresh profile once per host name below, each time
# at https://<name>:$PORT/ with the name resolved to 127.0.0.1, until COUNT
# (default 20) hellos are recorded. The listener closes every connection
# after its first record, so no handshake completes and nothing is resumed.
# A browser retries a closed connection several times, and Firefox's
# retries drop extensions (compress_certificate), so only the FIRST hello of
# each browser run is kept: every kept hello is a fresh first connection.
# Output: one header line `# <version>, <date>, <command>` and then one
# hex-encoded record per line. Network: only 127.0.0.1 is ever contacted
# (Firefox's every DNS answer is forced to 127.0.0.1, Chromium's background
# networking is off and its one name is mapped there).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out_dir=$(cd "$here/../.." && pwd)/crates/wire/templates
which=${1:-all}
count=${2:-20}
PORT=${PORT:-8443}
# Names of varied lengths, so length-dependent fields (SNI, padding) show.
names=(www.example.com a.example.org cdn.static-assets.example.net
  mail.example.com news.example.co.uk b.example
  login.accounts.example-identity-provider.com api.example.io
  www.wikipedia.example shop.example.de video.cdn.example.com x.example
  docs.example.dev img1.example.net maps.example.com cloud.example.org
  the-longest-subdomain-label-we-use.example.com m.example.ru
  static.example.jp edge-01.example.fr www.example.com a.example.org)

mkdir -p "$out_dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; [ -n "${lpid:-}" ] && kill "$lpid" 2>/dev/null || true' EXIT

need() { # need <binary> <debian package>
  command -v "$1" >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"
  }
}

start_listener() { # start_listener <outfile>
  python3 "$here/listener.py" "$PORT" "$1" 100000 2>/dev/null &
  lpid=$!
  sleep 0.5
}

keep_first() { # keep_first <raw> <lines before the run> <kept>: the run's first hello
  sleep 0.5
  tail -n "+$(($2 + 1))" "$1" | head -n 1 >>"$3"
  [ "$(wc -l <"$3")" -lt "$count" ]
}

finish() { # finish <browser> <version> <kept> <command>
  local file="$out_dir/$1.hellos"
  { echo "# $2, $(date -u +%Y-%m-%dT%H:%MZ), $4"; head -n "$count" "$3"; } >"$file"
  echo "$file: $(($(wc -l <"$file") - 1)) hellos" >&2
}

chrome() {
  need chromium chromium
  local raw=$tmp/chrome.raw kept=$tmp/chrome.kept cmd before
  : >"$raw"
  : >"$kept"
  start_listener "$raw"
  cmd="chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking --disable-component-update --disable-sync --user-data-dir=<fresh> --host-resolver-rules='MAP <name> 127.0.0.1' --screenshot https://<name>:$PORT/ (first hello of each run)"
  for name in "${names[@]}"; do
    before=$(wc -l <"$raw")
    local prof=$tmp/chrome-$RANDOM
    timeout 20 chromium --headless --no-sandbox --disable-gpu --disable-quic \
      --no-first-run --disable-background-networking --disable-component-update \
      --disable-sync --user-data-dir="$prof" \
      --host-resolver-rules="MAP $name 127.0.0.1" \
      --screenshot="$tmp/shot.png" "https://$name:$PORT/" >/dev/null 2>&1 || true
    rm -rf "$prof"
    keep_first "$raw" "$before" "$kept" || break
  done
  kill "$lpid" 2>/dev/null || true
  wait "$lpid" 2>/dev/null || true
  lpid=
  finish chrome "$(chromium --version 2>/dev/null)" "$kept" "$cmd"
}

firefox() {
  need firefox-esr firefox-esr
  local raw=$tmp/firefox.raw kept=$tmp/firefox.kept cmd before
  : >"$raw"
  : >"$kept"
  start_listener "$raw"
  cmd="firefox-esr --headless --no-remote --profile <fresh, user.js: DNS forced to 127.0.0.1, telemetry/updates/safebrowsing off> --screenshot https://<name>:$PORT/ (first hello of each run)"
  for name in "${names[@]}"; do
    before=$(wc -l <"$raw")
    local prof=$tmp/firefox-$RANDOM
    mkdir -p "$prof"
    cat >"$prof/user.js" <<PREFS
user_pref("network.dns.forceResolve", "127.0.0.1");
user_pref("network.dns.localDomains", "$name");
user_pref("network.dns.disableIPv6", true);
user_pref("network.trr.mode", 5);
user_pref("network.proxy.type", 0);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("network.prefetch-next", false);
user_pref("network.predictor.enabled", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.safebrowsing.update.enabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("toolkit.telemetry.unified", false);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("app.update.enabled", false);
user_pref("app.update.auto", false);
user_pref("app.normandy.enabled", false);
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("browser.search.update", false);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("services.settings.poll_interval", 999999999);
PREFS
    timeout 20 firefox-esr --headless --no-remote --profile "$prof" \
      --screenshot "$tmp/shot.png" "https://$name:$PORT/" >/dev/null 2>&1 || true
    rm -rf "$prof"
    keep_first "$raw" "$before" "$kept" || break
  done
  kill "$lpid" 2>/dev/null || true
  wait "$lpid" 2>/dev/null || true
  lpid=
  finish firefox "$(firefox-esr --version 2>/dev/null)" "$kept" "$cmd"
}

case $which in
  chrome) chrome ;;
  firefox) firefox ;;
  all) chrome; firefox ;;
  *) echo "usage: $0 [chrome|firefox|all] [COUNT]" >&2; exit 2 ;;
esac
