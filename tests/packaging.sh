#!/usr/bin/env bash
# End-to-end test of the packages, on this machine, as root (CI runs it after the tests).
#
# Builds the static binary, the .deb and the .rpm (packaging/build-packages.sh); installs the
# .deb; checks files, owners, modes, the user, the unit's hardening score; starts the installed
# daemon the way its unit does (user indaba, the unit's ExecStart, NOTIFY_SOCKET) under strace,
# so what it really does is checked against the sandbox the unit puts it in; puts a real nginx
# with the shipped example config in front and chats over WebSocket through it; checks the
# .rpm's contents; then upgrade (an edited config.toml survives), remove (data and keys stay),
# reinstall (the old data opens) and purge (the data and secrets go; the account stays, so no
# file is left to a deleted uid); then the same for the .rpm, as far as an rpm on Debian goes
# (install, start, erase, removal by hand).
#
# Stops every process it started and purges the package on any exit; INDABA_PACKAGING_KEEP=1
# leaves the package installed for a look after a failure. Refuses to run where indaba is
# already installed or its user, data or config exist.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

START=$(date +%s)
STEP="start"
step() {
    STEP=$*
    echo "== [$(($(date +%s) - START))s] $*"
}
FAILED=0
fail() {
    FAILED=1
    echo "tests/packaging.sh: FAIL in \"$STEP\": $*" >&2
    exit 1
}
# equal WHAT ACTUAL EXPECTED
equal() {
    [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
}
# owner_mode PATH "MODE OWNER GROUP"
owner_mode() {
    [ -e "$1" ] || fail "$1 does not exist"
    equal "mode and owner of $1" "$(stat -c '%a %U %G' "$1")" "$2"
}

readonly UNIT=/lib/systemd/system/indaba.service
readonly CONF=/etc/indaba/config.toml
readonly KEY=/etc/indaba/encryption.key
readonly JWT=/etc/indaba/jwt_secret
readonly SERVICE=/etc/indaba/service_secret
readonly DOC=/usr/share/doc/indaba
readonly DATA=/var/lib/indaba
readonly WANTS=/etc/systemd/system/multi-user.target.wants/indaba.service
readonly MAX_EXPOSURE=2.0

TMP=""
DAEMON_PID=""   # the daemon, or strace in front of it
NGINX_PID=""
NOTIFY_PID=""
INSTALLED=0      # the .deb, to purge on exit
RPM_INSTALLED=0  # the .rpm, to erase (and remove by hand) on exit
OURS=0           # past the preconditions: any indaba user, /etc/indaba, /var/lib/indaba are ours
RPMDB=()

stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    if [ $rc -ne 0 ] && [ "$FAILED" = 0 ]; then
        echo "tests/packaging.sh: FAIL in \"$STEP\": a command exited with $rc (output above)" >&2
    fi
    if [ -n "$DAEMON_PID" ]; then
        # Under strace the daemon is strace's child: signal it, strace follows.
        stop_pid "$(ps -o pid= --ppid "$DAEMON_PID" 2>/dev/null | tr -d ' ')"
        stop_pid "$DAEMON_PID"
    fi
    stop_pid "$NGINX_PID"
    stop_pid "$NOTIFY_PID"
    if [ "$INSTALLED" = 1 ]; then
        if [ "${INDABA_PACKAGING_KEEP:-}" = 1 ]; then
            echo "INDABA_PACKAGING_KEEP=1: indaba stays installed (dpkg --purge indaba)"
        else
            dpkg --purge indaba >/dev/null 2>&1
        fi
    fi
    if [ "$RPM_INSTALLED" = 1 ] && [ "${INDABA_PACKAGING_KEEP:-}" != 1 ]; then
        rpm -e "${RPMDB[@]}" --nodeps indaba >/dev/null 2>&1
    fi
    # A purge keeps the account (and files an admin left): what this test made, it removes.
    if [ "$OURS" = 1 ] && [ "${INDABA_PACKAGING_KEEP:-}" != 1 ]; then
        rm -rf /var/lib/indaba /etc/indaba
        userdel indaba 2>/dev/null
        groupdel indaba 2>/dev/null
    fi
    if [ $rc -ne 0 ] && [ -n "$TMP" ]; then
        for log in "$TMP/daemon.log" "$TMP/nginx/error.log"; do
            [ -s "$log" ] && { echo "--- last lines of $log"; tail -n 20 "$log"; }
        done
    fi
    [ -n "$TMP" ] && rm -rf "$TMP"
    if [ $rc -eq 0 ]; then
        echo "tests/packaging.sh: PASS in $(($(date +%s) - START)) s"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "preconditions"
[ "$(id -u)" = 0 ] || fail "run as root: it installs the package on this machine"
for tool in dpkg dpkg-deb rpm rpm2archive nginx python3 curl setpriv runuser su \
    systemd-analyze strace file openssl strip sha256sum; do
    command -v "$tool" >/dev/null || fail "$tool is missing (.ci/run installs what this needs)"
done
python3 -c 'import websockets' 2>/dev/null || fail "python3 websockets is missing (pip install websockets)"
if dpkg-query -W -f '${Status}' indaba 2>/dev/null | grep -qv 'not-installed'; then
    fail "indaba is installed here already; this test installs and purges it: dpkg --purge indaba first"
fi
for path in "$DATA" /etc/indaba; do
    [ ! -e "$path" ] || fail "$path exists already; this test needs a machine without indaba"
done
! getent passwd indaba >/dev/null || fail "a user indaba exists already"
! getent group indaba >/dev/null || fail "a group indaba exists already"
OURS=1

# Files whose owner or group has no account, where packages, the daemon and admins put files:
# a purge must add none (a deleted uid would pass them to the next account that gets it).
orphans() {
    find /etc /var /srv /opt /home /tmp -xdev \( -nouser -o -nogroup \) -print 2>/dev/null | sort
}
ORPHANS_BEFORE=$(orphans)

TMP=$(mktemp -d /tmp/indaba-packaging.XXXXXX)
# The daemon (user indaba) and nginx (user nobody) reach their sockets and files in here.
chmod 0755 "$TMP"

# A free loopback port (a race with other processes is possible but harmless: start fails).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

step "build: static binary, .deb, .rpm"
bash packaging/build-packages.sh
BIN=target/packaging/indaba
DEB=$(ls target/packaging/indaba_*_amd64.deb)
RPM=$(ls target/packaging/indaba-*.x86_64.rpm)
file -L "$BIN" | grep -Eq 'static(-pie)? linked' || fail "$BIN is not static: $(file -L "$BIN")"
file -L "$BIN" | grep -q ', stripped' || fail "$BIN is not stripped"

step "the .deb's metadata"
equal "package name" "$(dpkg-deb -f "$DEB" Package)" "indaba"
dpkg-deb -e "$DEB" "$TMP/control"
equal "conffiles" "$(cat "$TMP/control/conffiles")" "$CONF"
for script in postinst prerm postrm; do
    cmp -s "$TMP/control/$script" "packaging/scripts/deb/$script" ||
        fail "the .deb's $script is not packaging/scripts/deb/$script"
done
for script in packaging/scripts/setup packaging/scripts/deb/* packaging/scripts/rpm/*; do
    sh -n "$script" || fail "$script: shell syntax error"
done

step "dpkg -i"
timeout 120 dpkg -i "$DEB" </dev/null >"$TMP/dpkg-install.log" 2>&1 ||
    fail "dpkg -i failed: $(cat "$TMP/dpkg-install.log")"
INSTALLED=1
grep -q "generated $KEY" "$TMP/dpkg-install.log" || fail "postinst did not generate $KEY"
grep -q "generated $JWT" "$TMP/dpkg-install.log" || fail "postinst did not generate $JWT"
grep -q "generated $SERVICE" "$TMP/dpkg-install.log" || fail "postinst did not generate $SERVICE"

step "installed files, owners, modes"
owner_mode /usr/bin/indaba "755 root root"
owner_mode /usr/lib/indaba/setup "755 root root"
owner_mode "$UNIT" "644 root root"
owner_mode "$CONF" "644 root root"
owner_mode /etc/indaba "755 root root"
owner_mode "$KEY" "600 indaba indaba"
owner_mode "$JWT" "600 indaba indaba"
owner_mode "$SERVICE" "600 indaba indaba"
owner_mode "$DATA" "700 indaba indaba"
owner_mode "$DOC/packaging/nginx/indaba.conf" "644 root root"
owner_mode "$DOC/docs/OPERATIONS.md" "644 root root"
cmp -s /usr/bin/indaba "$BIN" || fail "/usr/bin/indaba is not the binary just built"
cmp -s "$UNIT" systemd/indaba.service || fail "$UNIT is not systemd/indaba.service"
cmp -s "$CONF" packaging/config.toml || fail "$CONF is not packaging/config.toml"
grep -Eqx '[0-9a-f]{64}' "$KEY" || fail "$KEY is not 64 hex digits"
grep -Eqx '[0-9a-f]{64}' "$JWT" || fail "$JWT is not 64 hex digits"
grep -Eqx '[0-9a-f]{64}' "$SERVICE" || fail "$SERVICE is not 64 hex digits"
equal "distinct secrets" "$(sort -u "$KEY" "$JWT" "$SERVICE" | wc -l)" 3
grep -qx "shared_secret_file = \"$SERVICE\"" "$CONF" || fail "$CONF does not name $SERVICE"
for secret in "$KEY" "$JWT" "$SERVICE"; do
    ! grep -qF "$(cat "$secret")" "$CONF" || fail "$CONF holds the secret of $secret"
done
/usr/bin/indaba --version | grep -q "^indaba " || fail "indaba --version: $(/usr/bin/indaba --version)"
[ -L "$WANTS" ] || fail "the unit is not enabled ($WANTS missing)"

step "every link in the installed docs resolves to an installed file"
# The docs are installed in the source tree's layout; each [text](relative/path#anchor) in an
# installed .md must name an installed file (and a heading there), and each /usr/share/doc/indaba
# path that the docs, the config, the unit or the nginx example name must exist.
python3 - "$DOC" "$UNIT" "$CONF" <<'PY' || fail "the installed docs link to what is not installed"
import os, re, sys

root, named = sys.argv[1], sys.argv[2:]

def anchors(path):
    text = re.sub(r"(?ms)^```.*?^```", "", open(path).read())
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"(?m)^#{1,6} (.+)$", text)}

mds = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".md"))
problems, links = [], 0
for md in mds:
    text = re.sub(r"(?ms)^```.*?^```", "", open(md).read())
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        links += 1
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(md), path)) if path else md
        if not os.path.isfile(full):
            problems.append(f"{md}: [..]({target}): {full} is not installed")
        elif anchor and full.endswith(".md") and anchor not in anchors(full):
            problems.append(f"{md}: [..]({target}): no heading #{anchor} in {full}")
for f in mds + named + [os.path.join(root, "packaging/nginx/indaba.conf"),
                        os.path.join(root, "config.toml.example")]:
    for p in re.findall(r"/usr/share/doc/indaba/[\w./-]*", open(f).read()):
        p = p.rstrip(".")
        if not os.path.exists(p):
            problems.append(f"{f}: names {p}, which is not installed")
for p in problems:
    print(p, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"{len(mds)} installed docs, {links} relative links, all resolve")
PY

step "the indaba user"
IFS=: read -r _ _ uid _ _ home shell <<<"$(getent passwd indaba)"
equal "home of indaba" "$home" "$DATA"
equal "shell of indaba" "$shell" "/usr/sbin/nologin"
[ "$uid" -lt 1000 ] || fail "indaba is not a system user (uid $uid)"
getent group indaba >/dev/null || fail "no group indaba"
if su -c true indaba >"$TMP/su.log" 2>&1; then
    fail "su to indaba succeeded: the account must not log in"
fi

step "systemd-analyze security (at most $MAX_EXPOSURE)"
systemd-analyze security --offline=true "$UNIT" >"$TMP/security.log" 2>&1 ||
    fail "systemd-analyze security failed: $(tail -n 3 "$TMP/security.log")"
exposure=$(sed -n 's/.*Overall exposure level for indaba.service: \([0-9.]*\).*/\1/p' "$TMP/security.log")
[ -n "$exposure" ] || fail "no exposure level in: $(tail -n 3 "$TMP/security.log")"
awk -v e="$exposure" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(e <= max) }' ||
    fail "exposure $exposure is above $MAX_EXPOSURE: $(grep '✗' "$TMP/security.log")"
echo "exposure level: $exposure"
systemd-analyze verify "$UNIT" >"$TMP/verify.log" 2>&1 ||
    fail "systemd-analyze verify: $(cat "$TMP/verify.log")"

step "check-config as indaba"
runuser -u indaba -- /usr/bin/indaba check-config --config "$CONF" >"$TMP/check.out" 2>"$TMP/check.err" ||
    fail "check-config: $(cat "$TMP/check.err")"
grep -q 'configuration is valid' "$TMP/check.err" || fail "check-config: $(cat "$TMP/check.err")"
grep -q "data_dir = \"$DATA\"" "$TMP/check.out" || fail "check-config does not show data_dir $DATA"
! grep -qF "$(cat "$JWT")" "$TMP/check.out" "$TMP/check.err" || fail "check-config printed the JWT secret"
! grep -qF "$(cat "$KEY")" "$TMP/check.out" "$TMP/check.err" || fail "check-config printed the key"
! grep -qF "$(cat "$SERVICE")" "$TMP/check.out" "$TMP/check.err" || fail "check-config printed the service secret"

# The notify socket systemd would give a Type=notify service; one line per datagram.
mkdir -m 0755 "$TMP/notify"
python3 - "$TMP/notify/sock" "$TMP/notify.log" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
with open(sys.argv[2], "a", buffering=1) as log:
    while True:
        log.write(s.recv(4096).decode().replace("\n", " ").strip() + "\n")
PY
NOTIFY_PID=$!
for _ in $(seq 50); do [ -S "$TMP/notify/sock" ] && break; sleep 0.1; done
[ -S "$TMP/notify/sock" ] || fail "the notify listener did not start"
touch "$TMP/notify.log"

PORT=$(free_port)
EXEC_START=$(sed -n 's/^ExecStart=//p' "$UNIT")
[ -n "$EXEC_START" ] || fail "no ExecStart= in $UNIT"
read -r -a ARGV <<<"$EXEC_START"
NOFILE=$(sed -n 's/^LimitNOFILE=//p' "$UNIT")
UMASK=$(sed -n 's/^UMask=//p' "$UNIT")
RUN_NOFILE=$NOFILE
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$NOFILE" ]; then
    echo "note: this machine caps open files at $hard (no CAP_SYS_RESOURCE): the daemon runs with that, not LimitNOFILE=$NOFILE"
    RUN_NOFILE=$hard
fi

# start_daemon [strace]: the unit's ExecStart as user indaba, from /, with its umask and file
# limit, no capabilities, no new privileges, a clean environment plus NOTIFY_SOCKET and the
# test's port (what a drop-in's Environment= would do). Waits for READY=1 and /health.
start_daemon() {
    local trace=() ready_before
    [ "${1:-}" = strace ] && trace=(strace -f -qq -o "$TMP/strace.log")
    ready_before=$(grep -c '^READY=1' "$TMP/notify.log" || true)
    (
        cd /
        umask "$UMASK"
        ulimit -n "$RUN_NOFILE"
        exec "${trace[@]}" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME="$DATA" USER=indaba LOGNAME=indaba SHELL=/usr/sbin/nologin \
            NOTIFY_SOCKET="$TMP/notify/sock" INDABA_SERVER__LISTEN="127.0.0.1:$PORT" \
            setpriv --reuid=indaba --regid=indaba --init-groups --no-new-privs \
            --inh-caps=-all --bounding-set=-all -- "${ARGV[@]}"
    ) </dev/null >>"$TMP/daemon.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 300); do
        [ "$(grep -c '^READY=1' "$TMP/notify.log" || true)" -gt "$ready_before" ] && break
        kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon exited: $(tail -n 5 "$TMP/daemon.log")"
        sleep 0.1
    done
    [ "$(grep -c '^READY=1' "$TMP/notify.log" || true)" -gt "$ready_before" ] ||
        fail "no READY=1 within 30 s: $(tail -n 5 "$TMP/daemon.log")"
    curl -fsS --max-time 5 "http://127.0.0.1:$PORT/health" | grep -q '"status":"ok"' ||
        fail "/health is not ok after READY=1"
}

# The daemon's own pid (strace's child when traced).
daemon_pid() {
    local child
    child=$(ps -o pid= --ppid "$DAEMON_PID" | tr -d ' ')
    echo "${child:-$DAEMON_PID}"
}

# stop_daemon: SIGTERM as systemd's stop does; the daemon must exit 0 and say STOPPING=1.
stop_daemon() {
    local stopping_before rc=0
    stopping_before=$(grep -c '^STOPPING=1' "$TMP/notify.log" || true)
    kill -TERM "$(daemon_pid)"
    timeout 30 tail --pid="$DAEMON_PID" -f /dev/null || fail "the daemon did not stop within 30 s"
    wait "$DAEMON_PID" || rc=$?
    DAEMON_PID=""
    equal "exit code after SIGTERM" "$rc" "0"
    [ "$(grep -c '^STOPPING=1' "$TMP/notify.log" || true)" -gt "$stopping_before" ] ||
        fail "no STOPPING=1 notification"
}

# get_message ID: the HTTP status of message ID as user 2, straight from the daemon.
get_message() {
    curl -s --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $T2" \
        "http://127.0.0.1:$PORT/api/v1/messaging/messages/$1/"
}

step "start the installed daemon as its unit would (under strace)"
start_daemon strace
owner_mode "$DATA/indaba.redb" "600 indaba indaba"
owner_mode "$DATA/indaba.journal" "600 indaba indaba"
# log.format = "json": every line the daemon writes is one JSON object.
python3 - "$TMP/daemon.log" <<'PY' || fail "the daemon's log is not JSON lines"
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
assert lines, "no log lines"
for l in lines:
    event = json.loads(l)
    assert "level" in event, l
PY
curl -fsS --max-time 5 "http://127.0.0.1:$PORT/ready" | grep -q '"status":"ready"' || fail "/ready is not ready"
# /metrics takes the generated service secret, as docs/OPERATIONS.md's scrape config sends it.
curl -fsS --max-time 5 -H "Authorization: Bearer $(cat "$SERVICE")" "http://127.0.0.1:$PORT/metrics" |
    grep -q '^indaba_connections ' || fail "/metrics with the service secret has no indaba_connections"
equal "/metrics without the service secret" \
    "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/metrics")" 401

step "nginx with the packaged example config"
NGX=$TMP/nginx
NGPORT=$(free_port)
while [ "$NGPORT" = "$PORT" ]; do NGPORT=$(free_port); done
mkdir -p "$NGX"
# Loopback port instead of 80, no IPv6 (CI may lack it), the test daemon's port, and logs here.
sed -e "s/^    listen 80;$/    listen 127.0.0.1:$NGPORT;/" -e '/^    listen \[::\]:80;$/d' \
    -e "s/^    server 127.0.0.1:8765;$/    server 127.0.0.1:$PORT;/" \
    -e "s|^    access_log /var/log/nginx/indaba.access.log indaba;$|    access_log $NGX/access.log indaba;|" \
    "$DOC/packaging/nginx/indaba.conf" >"$NGX/indaba.conf"
for expect in "listen 127.0.0.1:$NGPORT;" "server 127.0.0.1:$PORT;" "access_log $NGX/access.log indaba;"; do
    equal "lines '$expect' in the edited nginx config" "$(grep -cF "$expect" "$NGX/indaba.conf")" 1
done
! grep -Eq '^[^#]*listen (80|\[::\])' "$NGX/indaba.conf" || fail "a listen line was not replaced"
cat >"$NGX/nginx.conf" <<EOF
worker_processes 1;
pid $NGX/nginx.pid;
error_log $NGX/error.log notice;
events { worker_connections 256; }
http {
    access_log $NGX/default-access.log;
    client_body_temp_path $NGX/body;
    proxy_temp_path $NGX/proxy;
    fastcgi_temp_path $NGX/fastcgi;
    uwsgi_temp_path $NGX/uwsgi;
    scgi_temp_path $NGX/scgi;
    include $NGX/indaba.conf;
}
EOF
chown -R nobody:nogroup "$NGX"
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; }
as_nobody nginx -t -q -p "$NGX/" -c "$NGX/nginx.conf" -e "$NGX/error.log" ||
    fail "nginx -t rejects the example config"
# Not through as_nobody: $! must be nginx itself (setpriv execs it), for the cleanup.
setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
    nginx -p "$NGX/" -c "$NGX/nginx.conf" -e "$NGX/error.log" -g 'daemon off;' &
NGINX_PID=$!
NG="http://127.0.0.1:$NGPORT"
for _ in $(seq 50); do
    curl -fs --max-time 2 -o /dev/null "$NG/health" && break
    kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx exited: $(cat "$NGX/error.log")"
    sleep 0.1
done
curl -fsS --max-time 5 -D "$TMP/health.headers" "$NG/health" | grep -q '"status":"ok"' ||
    fail "/health through nginx is not ok"
grep -qi '^server: nginx' "$TMP/health.headers" || fail "/health did not come through nginx"
curl -fsS --max-time 5 "$NG/ready" | grep -q '"status":"ready"' || fail "/ready through nginx is not ready"
# /metrics is not proxied: nginx answers itself (HTML), the daemon never sees it (its answers
# are JSON).
curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" | grep -q '^{' ||
    fail "the daemon's own /metrics answer is not JSON: this check would prove nothing"
curl -s --max-time 5 "$NG/metrics" | grep -q '<center>nginx' || fail "nginx passed /metrics on"

step "the commented TLS server block is valid nginx"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$NGX/tls.key" -out "$NGX/tls.crt" 2>/dev/null
python3 - "$NGX" "$NGPORT" <<'PY' || fail "could not cut the TLS block out of the example"
import re, sys
ngx, port = sys.argv[1], sys.argv[2]
text = open(ngx + "/indaba.conf").read()
head = text[: text.index("\nserver {")]
begin, end = text.index("# BEGIN TLS\n"), text.index("# END TLS")
block = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#")
                  for l in text[begin + len("# BEGIN TLS\n"):end].splitlines())
block = block.replace("listen 80;", f"listen 127.0.0.1:{port};")
block = block.replace("listen 443 ssl http2;", "listen 127.0.0.1:8443 ssl http2;")
block = re.sub(r"\n\s*listen \[::\]:\d+( ssl http2)?;", "", block)
block = re.sub(r"\n\s*access_log [^\n]*", "", block)
block = block.replace("/etc/letsencrypt/live/chat.example.com/fullchain.pem", ngx + "/tls.crt")
block = block.replace("/etc/letsencrypt/live/chat.example.com/privkey.pem", ngx + "/tls.key")
assert "ssl_certificate" in block and "proxy_pass http://indaba" in block
open(ngx + "/tls.conf", "w").write(head + "\n" + block)
PY
sed "s|include $NGX/indaba.conf;|include $NGX/tls.conf;|" "$NGX/nginx.conf" >"$NGX/nginx-tls.conf"
chown -R nobody:nogroup "$NGX"
as_nobody nginx -t -q -p "$NGX/" -c "$NGX/nginx-tls.conf" -e "$NGX/error.log" ||
    fail "nginx -t rejects the TLS block of the example"

step "WebSocket chat through nginx"
T1=$(runuser -u indaba -- /usr/bin/indaba token --user-id 1 --config "$CONF") || fail "indaba token"
T2=$(runuser -u indaba -- /usr/bin/indaba token --user-id 2 --config "$CONF") || fail "indaba token"
status=$(curl -sS --max-time 10 -o "$TMP/conv.json" -w '%{http_code}' -H "Authorization: Bearer $T1" \
    -H 'Content-Type: application/json' -d '{"participants":[1,2],"subject":"packaging"}' \
    "$NG/api/v1/messaging/conversations/")
[ "$status" = 201 ] || fail "create conversation through nginx: $status $(cat "$TMP/conv.json")"
CONV=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/conv.json")
MSG=$(python3 - "ws://127.0.0.1:$NGPORT" "$CONV" "$T1" "$T2" <<'PY'
import asyncio, json, sys
import websockets

base, conv, t1, t2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
TEXT = "through nginx"

def bad(why):
    print(why, file=sys.stderr)
    sys.exit(1)

async def expect(ws, want):
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if event.get("type") == want:
            return event
        if event.get("type") == "error":
            bad(f"waiting for {want}: {event}")

async def main():
    async with websockets.connect(f"{base}/ws/chat/?token={t2}") as receiver, \
               websockets.connect(f"{base}/ws/chat/?token={t1}") as sender:
        if (await expect(receiver, "connection_established"))["user_id"] != 2:
            bad("receiver is not user 2")
        if (await expect(sender, "connection_established"))["user_id"] != 1:
            bad("sender is not user 1")
        await sender.send(json.dumps({"type": "chat_message", "conversation_id": conv, "text": TEXT}))
        sent = await expect(sender, "message_sent")
        new = await expect(receiver, "new_message")
        if new["message_id"] != sent["message_id"] or new["text"] != TEXT \
                or new["sender_id"] != 1 or new["conversation_id"] != conv:
            bad(f"message_sent {sent} does not match new_message {new}")
        await sender.send(json.dumps({"type": "ping"}))
        await expect(sender, "pong")
        print(sent["message_id"])

asyncio.run(asyncio.wait_for(main(), 30))
PY
) || fail "the WebSocket chat through nginx failed"
curl -fsS --max-time 10 -H "Authorization: Bearer $T2" "$NG/api/v1/messaging/messages/$MSG/" |
    grep -q '"text":"through nginx"' || fail "message $MSG is not readable over REST through nginx"
grep -q '"GET /ws/chat/ HTTP/1.1" 101 ' "$NGX/access.log" ||
    fail "nginx's access log has no upgraded /ws/chat/: $(tail -n 3 "$NGX/access.log")"
! grep -qF "$T1" "$NGX/access.log" || fail "nginx logged a token (the query string)"

step "X-Forwarded-For: the client nginx saw, not what the client claims"
# Failed logins are limited per client address (a burst of 20). Behind nginx every request
# comes from 127.0.0.1; only X-Forwarded-For tells clients apart. 127.0.0.2 forges a new
# address in every request and must still run out; 127.0.0.3 then still gets through.
login() {
    curl -s --max-time 10 -o /dev/null -w '%{http_code}' --interface "$1" \
        -H "X-Forwarded-For: $2" -H 'Content-Type: application/json' \
        -d "{\"username\":\"nobody-$3\",\"password\":\"not-the-password\"}" "$NG/api/v1/auth/token/"
}
limited=0
for i in $(seq 1 40); do
    status=$(login 127.0.0.2 "198.51.100.$i" "$i")
    if [ "$status" = 429 ]; then limited=$i; break; fi
    [ "$status" = 401 ] || fail "failed login $i answered $status, expected 401"
done
[ "$limited" -gt 1 ] || fail "40 failed logins from 127.0.0.2 were never limited"
equal "a failed login from another client" "$(login 127.0.0.3 198.51.100.1 other)" 401
echo "limited after $((limited - 1)) failed logins from one client; another client unaffected"

step "online backup through the admin socket, as docs/OPERATIONS.md shows"
owner_mode "$DATA/admin.sock" "600 indaba indaba"
[ -S "$DATA/admin.sock" ] || fail "$DATA/admin.sock is not a socket"
install -d -o indaba -g indaba -m 0700 "$TMP/backups"
BACKUP=$TMP/backups/indaba-$(date +%F).redb
runuser -u indaba -- /usr/bin/indaba backup "$BACKUP" --config "$CONF" >"$TMP/backup.out" 2>&1 ||
    fail "indaba backup: $(cat "$TMP/backup.out")"
grep -q '^source: running daemon' "$TMP/backup.out" || fail "the backup did not come from the daemon: $(cat "$TMP/backup.out")"
owner_mode "$BACKUP" "600 indaba indaba"
# A message after the backup: the restore below must bring back the state without it.
status=$(curl -sS --max-time 10 -o "$TMP/msg2.json" -w '%{http_code}' -H "Authorization: Bearer $T1" \
    -H 'Content-Type: application/json' -d "{\"conversation\":$CONV,\"text\":\"after the backup\"}" \
    "$NG/api/v1/messaging/messages/")
[ "$status" = 201 ] || fail "send over REST through nginx: $status $(cat "$TMP/msg2.json")"
MSG2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/msg2.json")

step "SIGHUP (ExecReload) reloads the log level"
kill -HUP "$(daemon_pid)"
for _ in $(seq 50); do
    grep -q 'SIGHUP: log level reloaded' "$TMP/daemon.log" && break
    sleep 0.1
done
grep -q 'SIGHUP: log level reloaded' "$TMP/daemon.log" || fail "no reload logged after SIGHUP"
grep -q '^RELOADING=1' "$TMP/notify.log" || fail "no RELOADING=1 notification after SIGHUP"

step "stop (SIGTERM)"
stop_daemon

step "a typo in log.level: exit 2, with the error as a JSON line"
rc=0
runuser -u indaba -- env INDABA_SERVER__LISTEN="127.0.0.1:$PORT" INDABA_LOG__LEVEL=verbose \
    timeout 30 /usr/bin/indaba --config "$CONF" </dev/null >"$TMP/bad-level.log" 2>&1 || rc=$?
equal "exit code with log.level = verbose" "$rc" 2
python3 - "$TMP/bad-level.log" <<'PY' || fail "no JSON error line naming log.level: $(cat "$TMP/bad-level.log")"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert any(e["level"] == "ERROR" and "log.level" in e.get("error", "") for e in events), events
PY

step "what the daemon did fits the unit's sandbox"
python3 - "$TMP/strace.log" "$DATA" <<'PY' || fail "the daemon needs more than its unit allows"
import re, subprocess, sys

log, data = sys.argv[1], sys.argv[2]

def group(name):
    out = subprocess.run(["systemd-analyze", "syscall-filter", name],
                         capture_output=True, text=True, check=True).stdout
    calls = set()
    for line in out.splitlines()[1:]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        calls |= group(line) if line.startswith("@") else {line}
    return calls

# SystemCallFilter=@system-service, then ~@privileged @resources.
allowed = group("@system-service") - group("@privileged") - group("@resources")

lines = open(log).read().splitlines()
start = next(i for i, l in enumerate(lines) if re.match(r'\d+ +execve\("/usr/bin/indaba"', l))
problems = set()
used = set()
for line in lines[start:]:
    m = re.match(r"\d+ +(?:<\.\.\. )?([a-z0-9_]+)[( ]", line)
    if not m:
        continue
    call = m.group(1)
    used.add(call)
    if call not in allowed:
        problems.add(f"system call outside SystemCallFilter: {call}")
    family = re.search(r"socket\((\w+)", line)
    if family and family.group(1) not in ("AF_INET", "AF_INET6", "AF_UNIX"):
        problems.add(f"socket family outside RestrictAddressFamilies: {family.group(1)}")
    if call in ("mmap", "mprotect", "pkey_mprotect") and "PROT_EXEC" in line:
        if call != "mmap" or "PROT_WRITE" in line:
            problems.add(f"MemoryDenyWriteExecute would refuse: {line}")
    for path in re.findall(r'"(/proc/[^"]*)"', line):
        # mimalloc reads this once and, when it cannot, assumes overcommit: the kernel's
        # default (0), so ProcSubset=pid changes nothing unless the host runs mode 2.
        if path == "/proc/sys/vm/overcommit_memory":
            continue
        if not re.match(r"/proc/(self|thread-self|\d+)(/|$)", path):
            problems.add(f"/proc beyond ProcSubset=pid: {path}")
    writes = call in ("mkdir", "mkdirat", "unlink", "unlinkat", "rename", "renameat",
                      "renameat2", "rmdir", "link", "linkat", "symlink", "symlinkat") or (
        call in ("open", "openat", "creat") and re.search(r"O_WRONLY|O_RDWR|O_CREAT", line))
    if writes:
        # Absolute paths, and relative ones against the cwd (/); fd-relative ones are not
        # resolved here.
        for path in re.findall(r'(?:AT_FDCWD, |\()"([^"]*)"', line):
            path = path if path.startswith("/") else "/" + path
            if not (path == data or path.startswith(data + "/") or path == "/dev/null"):
                problems.add(f"write outside ReadWritePaths ({data}): {path}")
for p in sorted(problems):
    print(p, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"{len(used)} distinct system calls, all allowed by the unit")
PY

step "the .rpm"
# A private rpm database: queries and the install below leave the machine's alone.
mkdir "$TMP/rpmdb"
RPMDB=(--dbpath "$TMP/rpmdb")
# The same documentation as the .deb (docs/*.md and the screenshots the docs show, whatever is in
# docs/ now).
DOCS=$(for f in README.md config.toml.example docs/*.md docs/screenshots/*.png packaging/config.toml packaging/nginx/indaba.conf; do
    echo "$DOC/$f"
done | sort)
equal "the .deb's docs" "$(dpkg-deb -c "$DEB" | awk '{print substr($6, 2)}' |
    grep "^$DOC/" | grep -v '/$' | grep -v "^$DOC/copyright$" | sort)" "$DOCS"
equal "rpm file list" "$(rpm -qlp "${RPMDB[@]}" "$RPM" 2>/dev/null | sort)" \
    "$(printf '%s\n' /etc/indaba/config.toml /usr/bin/indaba /usr/lib/indaba/setup \
        /usr/lib/systemd/system/indaba.service $DOCS | sort)"
equal "rpm config files" "$(rpm -qcp "${RPMDB[@]}" "$RPM" 2>/dev/null)" "$CONF"
equal "rpm flags of $CONF" "$(rpm -qp "${RPMDB[@]}" --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" 2>/dev/null |
    sed -n "s| $CONF\$||p")" "cn"
rpm -qp "${RPMDB[@]}" --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]' "$RPM" \
    2>/dev/null >"$TMP/rpm-modes"
for expect in "-rwxr-xr-x root:root /usr/bin/indaba" "-rwxr-xr-x root:root /usr/lib/indaba/setup" \
    "-rw-r--r-- root:root /usr/lib/systemd/system/indaba.service" "-rw-r--r-- root:root $CONF"; do
    grep -qxF -- "$expect" "$TMP/rpm-modes" || fail "rpm: no '$expect' in: $(cat "$TMP/rpm-modes")"
done
rpm -qp "${RPMDB[@]}" --scripts "$RPM" 2>/dev/null >"$TMP/rpm-scripts"
python3 - "$TMP/rpm-scripts" <<'PY' || fail "the rpm's scriptlets are not packaging/scripts/rpm/*"
import sys
text = open(sys.argv[1]).read()
for name, path in [("postinstall", "post.sh"), ("preuninstall", "preun.sh"),
                   ("postuninstall", "postun.sh")]:
    body = open(f"packaging/scripts/rpm/{path}").read().strip()
    assert body in text, f"{name} scriptlet is not {path}"
PY
rpm -qpR "${RPMDB[@]}" "$RPM" 2>/dev/null | grep -qx 'shadow-utils' || fail "the rpm does not require shadow-utils"
mkdir "$TMP/rpm"
cp "$RPM" "$TMP/rpm/indaba.rpm"
rpm2archive "$TMP/rpm/indaba.rpm"
tar -xzf "$TMP/rpm/indaba.rpm.tgz" -C "$TMP/rpm"
cmp -s "$TMP/rpm/usr/bin/indaba" "$BIN" || fail "the rpm's binary is not the one built"
cmp -s "$TMP/rpm/usr/lib/systemd/system/indaba.service" systemd/indaba.service ||
    fail "the rpm's unit is not systemd/indaba.service"
cmp -s "$TMP/rpm/etc/indaba/config.toml" packaging/config.toml ||
    fail "the rpm's config is not packaging/config.toml"

step "upgrade (dpkg -i again) keeps an edited config, the keys and the data"
KEY_SUM=$(sha256sum "$KEY" "$JWT" "$SERVICE")
EDIT="# edited by tests/packaging.sh $$"
echo "$EDIT" >>"$CONF"
timeout 120 dpkg -i "$DEB" </dev/null >"$TMP/dpkg-upgrade.log" 2>&1 ||
    fail "dpkg -i over the installed package: $(cat "$TMP/dpkg-upgrade.log")"
grep -qxF "$EDIT" "$CONF" || fail "the upgrade replaced the edited $CONF"
equal "keys after the upgrade" "$(sha256sum "$KEY" "$JWT" "$SERVICE")" "$KEY_SUM"
! grep -q 'generated' "$TMP/dpkg-upgrade.log" || fail "the upgrade generated secrets again"
start_daemon
for id in "$MSG" "$MSG2"; do
    equal "message $id after the upgrade" "$(get_message "$id")" 200
done
stop_daemon

step "restore the backup, as docs/OPERATIONS.md shows"
install -o indaba -g indaba -m 0600 "$BACKUP" "$DATA/indaba.redb"
start_daemon
equal "message $MSG (in the backup) after the restore" "$(get_message "$MSG")" 200
equal "message $MSG2 (sent after the backup) after the restore" "$(get_message "$MSG2")" 404
stop_daemon

step "dpkg -r keeps data, keys, config and user"
timeout 120 dpkg -r indaba </dev/null >"$TMP/dpkg-remove.log" 2>&1 ||
    fail "dpkg -r: $(cat "$TMP/dpkg-remove.log")"
equal "package state" "$(dpkg-query -W -f '${Status}' indaba)" "deinstall ok config-files"
[ ! -e /usr/bin/indaba ] || fail "/usr/bin/indaba is still there"
[ ! -e "$UNIT" ] || fail "$UNIT is still there"
[ -s "$DATA/indaba.redb" ] || fail "$DATA/indaba.redb is gone"
equal "keys after remove" "$(sha256sum "$KEY" "$JWT" "$SERVICE")" "$KEY_SUM"
grep -qxF "$EDIT" "$CONF" || fail "$CONF lost its edit on remove"
getent passwd indaba >/dev/null || fail "remove deleted the user"

step "reinstall: the old data opens with the kept keys"
timeout 120 dpkg -i "$DEB" </dev/null >"$TMP/dpkg-reinstall.log" 2>&1 ||
    fail "dpkg -i after remove: $(cat "$TMP/dpkg-reinstall.log")"
grep -qxF "$EDIT" "$CONF" || fail "the reinstall replaced the edited $CONF"
equal "keys after the reinstall" "$(sha256sum "$KEY" "$JWT" "$SERVICE")" "$KEY_SUM"
[ -L "$WANTS" ] || fail "the reinstall did not enable the unit again"
[ "$(readlink /etc/systemd/system/indaba.service 2>/dev/null)" != /dev/null ] ||
    fail "the unit is still masked after the reinstall"
start_daemon
equal "message $MSG after remove and reinstall" "$(get_message "$MSG")" 200
stop_daemon

step "dpkg --purge removes data, keys and config; the account stays, no file is orphaned"
# What an admin leaves behind: a retired key, as the rotation in docs/OPERATIONS.md makes one
# (and the backup in $TMP/backups, owned by indaba).
RETIRED=/etc/indaba/encryption.key.retired
(umask 077 && /usr/bin/indaba keygen >"$RETIRED") && chown indaba:indaba "$RETIRED"
owner_mode "$BACKUP" "600 indaba indaba"
timeout 120 dpkg --purge indaba </dev/null >"$TMP/dpkg-purge.log" 2>&1 ||
    fail "dpkg --purge: $(cat "$TMP/dpkg-purge.log")"
INSTALLED=0
for path in "$DATA" "$KEY" "$JWT" "$SERVICE" "$CONF" "$WANTS" /etc/systemd/system/indaba.service; do
    [ ! -e "$path" ] && [ ! -L "$path" ] || fail "$path is still there after purge"
done
! dpkg-query -W -f '${Status}' indaba 2>/dev/null | grep -Eq 'config-files| installed$' ||
    fail "dpkg still knows indaba: $(dpkg-query -W -f '${Status}' indaba)"
owner_mode "$RETIRED" "600 indaba indaba"
owner_mode "$BACKUP" "600 indaba indaba"
getent passwd indaba >/dev/null || fail "purge deleted the user: its files are left to a future uid"
getent group indaba >/dev/null || fail "purge deleted the group"
IFS=: read -r _ _ _ _ _ _ shell <<<"$(getent passwd indaba)"
equal "shell of indaba after purge" "$shell" "/usr/sbin/nologin"
new_orphans=$(comm -13 <(echo "$ORPHANS_BEFORE") <(orphans))
[ -z "$new_orphans" ] || fail "files owned by no account after purge: $new_orphans"
# The removal by hand docs/OPERATIONS.md describes: nothing of the account is left but these.
equal "files of indaba left after purge" \
    "$(find /etc /var /srv /opt /home /tmp -xdev \( -user indaba -o -group indaba \) -print 2>/dev/null | sort)" \
    "$(printf '%s\n' "$BACKUP" "$TMP/backups" "$RETIRED" | sort)"
rm -rf /etc/indaba

step "rpm -i"
# Debian's rpm installs only with --force-debian; --nodeps because no Debian package provides
# shadow-utils (useradd is there, from passwd).
timeout 120 rpm -i "${RPMDB[@]}" --nodeps --force-debian "$RPM" </dev/null >"$TMP/rpm-install.log" 2>&1 ||
    fail "rpm -i: $(cat "$TMP/rpm-install.log")"
RPM_INSTALLED=1
owner_mode /usr/bin/indaba "755 root root"
owner_mode /usr/lib/systemd/system/indaba.service "644 root root"
owner_mode "$CONF" "644 root root"
owner_mode "$KEY" "600 indaba indaba"
owner_mode "$JWT" "600 indaba indaba"
owner_mode "$SERVICE" "600 indaba indaba"
owner_mode "$DATA" "700 indaba indaba"
runuser -u indaba -- /usr/bin/indaba check-config --config "$CONF" >/dev/null 2>"$TMP/check.err" ||
    fail "check-config after rpm -i: $(cat "$TMP/check.err")"
start_daemon
# New secrets, new tokens.
T1=$(runuser -u indaba -- /usr/bin/indaba token --user-id 1 --config "$CONF") || fail "indaba token"
T2=$(runuser -u indaba -- /usr/bin/indaba token --user-id 2 --config "$CONF") || fail "indaba token"
curl -fsS --max-time 10 -o "$TMP/conv.json" -H "Authorization: Bearer $T1" -H 'Content-Type: application/json' \
    -d '{"participants":[1,2]}' "http://127.0.0.1:$PORT/api/v1/messaging/conversations/" ||
    fail "create a conversation after rpm -i"
CONV=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/conv.json")
curl -fsS --max-time 10 -o "$TMP/msg3.json" -H "Authorization: Bearer $T1" -H 'Content-Type: application/json' \
    -d "{\"conversation\":$CONV,\"text\":\"sealed with the first key\"}" \
    "http://127.0.0.1:$PORT/api/v1/messaging/messages/" || fail "send a message after rpm -i"
MSG3=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$TMP/msg3.json")
stop_daemon

step "key rotation, as docs/OPERATIONS.md shows"
mv "$KEY" "$KEY.1"
(umask 077 && /usr/bin/indaba keygen >"$KEY")
chown indaba:indaba "$KEY"
# With the new key alone check-config and the daemon must refuse the data sealed with the old
# one, naming its key id (the first 4 bytes, little-endian, of SHA-256("indaba key id v1" || key)).
OLD_ID=$(python3 -c 'import hashlib, sys
key = bytes.fromhex(open(sys.argv[1]).read().strip())
print("%08x" % int.from_bytes(hashlib.sha256(b"indaba key id v1" + key).digest()[:4], "little"))' "$KEY.1")
rc=0
runuser -u indaba -- /usr/bin/indaba check-config --config "$CONF" >/dev/null 2>"$TMP/check.err" || rc=$?
equal "exit code of check-config with only the new key" "$rc" 2
grep -q "sealed with key id(s) $OLD_ID that no configured key opens" "$TMP/check.err" ||
    fail "check-config did not name the missing key $OLD_ID: $(cat "$TMP/check.err")"
rc=0
runuser -u indaba -- env INDABA_SERVER__LISTEN="127.0.0.1:$PORT" \
    timeout 30 /usr/bin/indaba --config "$CONF" </dev/null >"$TMP/wrong-key.log" 2>&1 || rc=$?
equal "exit code of the daemon with only the new key" "$rc" 2
grep -q 'the encryption key does not match data file' "$TMP/wrong-key.log" ||
    fail "not refused for the key: $(tail -n 3 "$TMP/wrong-key.log")"
# ...and open it with the old one listed as retired.
sed -i 's|^old_encryption_key_files = \[\]$|old_encryption_key_files = ["/etc/indaba/encryption.key.1"]|' "$CONF"
grep -qxF 'old_encryption_key_files = ["/etc/indaba/encryption.key.1"]' "$CONF" ||
    fail "packaging/config.toml has no 'old_encryption_key_files = []' line to edit"
runuser -u indaba -- /usr/bin/indaba check-config --config "$CONF" >/dev/null 2>"$TMP/check.err" ||
    fail "check-config after the rotation: $(cat "$TMP/check.err")"
start_daemon
equal "message $MSG3 (old key) after the rotation" "$(get_message "$MSG3")" 200
stop_daemon

step "rpm -e keeps data, keys, config and user"
KEY_SUM=$(sha256sum "$KEY" "$JWT" "$SERVICE")
echo "$EDIT" >>"$CONF"
timeout 120 rpm -e "${RPMDB[@]}" --nodeps indaba </dev/null >"$TMP/rpm-erase.log" 2>&1 ||
    fail "rpm -e: $(cat "$TMP/rpm-erase.log")"
for path in /usr/bin/indaba /usr/lib/systemd/system/indaba.service /usr/lib/indaba /usr/share/doc/indaba; do
    [ ! -e "$path" ] || fail "$path is still there after rpm -e"
done
grep -qxF "$EDIT" "$CONF.rpmsave" || fail "rpm -e did not keep the edited config as $CONF.rpmsave"
equal "keys after rpm -e" "$(sha256sum "$KEY" "$JWT" "$SERVICE")" "$KEY_SUM"
[ -s "$DATA/indaba.redb" ] || fail "rpm -e deleted $DATA/indaba.redb"
getent passwd indaba >/dev/null || fail "rpm -e deleted the user"

step "removal by hand after rpm -e, as docs/OPERATIONS.md shows"
rm -rf /var/lib/indaba /etc/indaba
# What the account still owns: here only the backups this test made as indaba, which an
# admin would keep (chowned) or delete before userdel.
equal "files of indaba left after the removal by hand" \
    "$(find /etc /var /srv /opt /home /tmp -xdev \( -user indaba -o -group indaba \) -print 2>/dev/null | sort)" \
    "$(printf '%s\n' "$BACKUP" "$TMP/backups" | sort)"
rm -rf "$TMP/backups"
userdel indaba
RPM_INSTALLED=0
! getent group indaba >/dev/null || fail "userdel left the group indaba (OPERATIONS.md needs groupdel)"
