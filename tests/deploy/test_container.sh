#!/usr/bin/env bash
# tests/deploy/test_container.sh: builds the container image from the
# Dockerfile for real and runs the whole system from it, one container per
# service, through docker-compose 1.29 talking to `podman system service`
# with deploy/compose.yaml + deploy/compose.host.yaml (host network,
# loopback ports 20300-20399; no bridge network, no published port). Then,
# from the outside, as a user would: makes a domain and two accounts with
# samotop-admin inside a container, sends one message to the MTA and one
# through the MSA (STARTTLS + AUTH) with Python's smtplib, and reads both
# back over IMAP with imaplib, checking the Maildir volume holds them too.
# Then runs samotopd alone from the image (its default command), and a
# guard with its HTTP door on to check the health endpoints. Every
# container, volume and the podman service it made are removed at the end,
# whatever happened; what a killed run left is removed by the next one.
#
# The image is built from what a clean clone holds: the committed tree
# (git archive HEAD) when SAMOTOP_SRC is a git checkout, so work in
# progress beside it cannot break or leak into the image;
# SAMOTOP_CONTAINER_SRC=worktree builds the working tree instead, and
# SAMOTOP_CONTAINER_IMAGE=TAG runs an image built before (to iterate on
# the compose files; ctest never sets it).
# Needs root (podman with runc) and ../shared/tools/container-build (or
# /work/shared/tools/container-build), or SAMOTOP_CONTAINER_BUILD naming it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=${SAMOTOP_SRC:-$(cd "$here/../.." && pwd)}
# Beside the project's folder, or where the development machines keep it
# (a clone elsewhere, e.g. CI's, has no ../shared).
build_tool=${SAMOTOP_CONTAINER_BUILD:-}
if [ -z "$build_tool" ]; then
	for t in "$src/../shared/tools/container-build" /work/shared/tools/container-build; do
		[ -x "$t" ] && { build_tool=$t; break; }
	done
	build_tool=${build_tool:-$src/../shared/tools/container-build}
fi
py=/usr/bin/python3
[ -x "$py" ] || py=python3

# Ports (tests/README.md: 20300-20399 are this test's).
base=20300
export SAMOTOP_BUS_CLIENTS=tcp://127.0.0.1:$base
export SAMOTOP_BUS_WORKERS=tcp://127.0.0.1:$((base + 1))
export SAMOTOP_BUS_TRACE=tcp://127.0.0.1:$((base + 2))
export SAMOTOP_REDIS_PORT=$((base + 6))
export SAMOTOP_LISTEN_MTA=127.0.0.1:$((base + 10))
export SAMOTOP_LISTEN_MSA=127.0.0.1:$((base + 11))
export SAMOTOP_LISTEN_SMTPS=127.0.0.1:$((base + 12))
export SAMOTOP_LISTEN_IMAP=127.0.0.1:$((base + 13))
export SAMOTOP_LISTEN_IMAPS=127.0.0.1:$((base + 14))
export SAMOTOP_LISTEN_LMTP=127.0.0.1:$((base + 15))
export SAMOTOP_HOSTNAME=mx.deploy.test
unset SAMOTOP_CONFIG SAMOTOP_DATA

tag=${SAMOTOP_CONTAINER_IMAGE:-localhost/samotop:deploy-test}
project=samotopdeploy$$
work=$(mktemp -d /tmp/samotop-container-XXXXXX)
sock=$work/podman.sock
service_pid=
echo $$ >"$work/test.pid"
t0=$(date +%s)

say() { echo "test_container: $(($(date +%s) - t0))s: $*"; }
fail() { echo "test_container: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "needs root for podman with runc"
[ -x "$build_tool" ] || fail "no container-build at $build_tool (set SAMOTOP_CONTAINER_BUILD)"
command -v docker-compose >/dev/null || fail "docker-compose missing: deploy/deps --test"

# Nothing of ours may be listening before we start: a leftover would
# answer in place of the containers.
for p in $base $((base + 1)) $((base + 6)) $((base + 10)) $((base + 11)) \
         $((base + 13)) $((base + 50)) $((base + 56)) $((base + 60)) $((base + 90)); do
  if ss -Hltn "sport = :$p" | grep -q .; then fail "port $p already in use"; fi
done

compose() {
  DOCKER_HOST=unix://$sock COMPOSE_PROJECT_NAME=$project \
  SAMOTOP_IMAGE=$tag SAMOTOP_REDIS_IMAGE=$tag \
    docker-compose -f "$src/deploy/compose.yaml" -f "$src/deploy/compose.host.yaml" "$@"
}

cleanup() {
  local rc=$?
  set +e
  if [ $rc -ne 0 ] && [ -S "$sock" ]; then
    echo "---- container logs ----" >&2
    for c in $(podman ps -a -q --filter label=com.docker.compose.project=$project); do
      echo "== $(podman inspect --format '{{.Name}} {{.State.Status}} exit={{.State.ExitCode}}' "$c")" >&2
      podman logs --tail 30 "$c" >&2 2>&1
    done
  fi
  [ -S "$sock" ] && compose down -v --remove-orphans -t 10 >/dev/null 2>&1
  # Whatever compose could not remove: by the project's label only.
  for c in $(podman ps -a -q --filter label=com.docker.compose.project=$project); do
    podman rm -f "$c" >/dev/null 2>&1
  done
  for v in $(podman volume ls -q --filter label=com.docker.compose.project=$project); do
    podman volume rm -f "$v" >/dev/null 2>&1
  done
  if [ -n "$service_pid" ]; then kill "$service_pid" 2>/dev/null; wait "$service_pid" 2>/dev/null; fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# What an earlier run killed before its cleanup (ctest's timeout sends
# SIGKILL) left behind: its project name carries its pid, now dead.
eval "$("$build_tool" --env)"
for d in /tmp/samotop-container-*/; do
  [ -f "$d/test.pid" ] && ! kill -0 "$(cat "$d/test.pid")" 2>/dev/null || continue
  if [ -f "$d/service.pid" ]; then kill "$(cat "$d/service.pid")" 2>/dev/null || true; fi
  rm -rf "$d"
done
for p in $(podman ps -a --format '{{index .Labels "com.docker.compose.project"}}' 2>/dev/null |
           grep -E '^samotopdeploy[0-9]+$' | sort -u); do
  if ! kill -0 "${p#samotopdeploy}" 2>/dev/null; then
    say "removing what the dead run $p left"
    podman ps -a -q --filter label=com.docker.compose.project="$p" | xargs -r podman rm -f >/dev/null 2>&1
    podman volume ls -q --filter label=com.docker.compose.project="$p" | xargs -r podman volume rm -f >/dev/null 2>&1
  fi
done

# 1. The build context: a clean clone's files. 2. The image, built as on
# any Docker host (the docker format keeps the HEALTHCHECK); the image the
# tag held before is removed once replaced, and so are the build stage's
# source layers of earlier runs (the package layer stays cached).
build_image() {
  local ctx=$work/ctx old new
  mkdir -p "$ctx"
  if [ "${SAMOTOP_CONTAINER_SRC:-}" != worktree ] &&
     git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$src" archive --format=tar HEAD | tar -C "$ctx" -x
    say "context: git archive $(git -C "$src" rev-parse --short HEAD)"
  else
    ctx=$src
    say "context: $src as it is"
  fi
  old=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  BUILDAH_FORMAT=docker "$build_tool" "$ctx" "$tag" >"$work/build.log" 2>&1 ||
    { tail -40 "$work/build.log" >&2; fail "image build failed"; }
  new=$(podman image inspect --format '{{.Id}}' "$tag")
  if [ -n "$old" ] && [ "$old" != "$new" ]; then
    podman rmi "$old" >/dev/null 2>&1 || true
  fi
  podman image prune -f --filter label=org.samotop.stage=build >/dev/null 2>&1 || true
  say "image $tag built ($(podman image inspect --format '{{.Size}}' "$tag") bytes)"
}
if [ -z "${SAMOTOP_CONTAINER_IMAGE:-}" ]; then
  build_image
else
  say "image $tag as given (SAMOTOP_CONTAINER_IMAGE), not built"
fi

# The image as built: non-root, with the healthcheck, every program.
[ "$(podman run --rm --no-healthcheck --network host "$tag" id -u)" = 10025 ] || fail "image runs as root"
podman image inspect --format '{{json .Config.Healthcheck}}' "$tag" | grep -q samotop-health ||
  fail "image has no HEALTHCHECK"
for p in samotopd samotop-bus samotop-listener samotop-auth samotop-guard \
         samotop-mailbox samotop-queue samotop-relay samotop-admin samotop-tap; do
  podman run --rm --no-healthcheck --network host "$tag" "$p" --help >/dev/null 2>&1 || fail "$p does not run in the image"
done

# 3. The podman API for docker-compose, on a socket of our own.
podman system service --time=0 "unix://$sock" >"$work/service.log" 2>&1 &
service_pid=$!
echo "$service_pid" >"$work/service.pid"
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || fail "podman system service did not start"

# 4. The whole system, one container per service; two guards and two
# relays, as `--scale` would give on a Docker host.
compose up -d --scale guard=2 --scale relay=2 >"$work/up.log" 2>&1 ||
  { cat "$work/up.log" >&2; fail "docker-compose up failed"; }
say "compose up"
ctr() { podman ps -q --filter label=com.docker.compose.project=$project \
          --filter label=com.docker.compose.service="$1" | head -1; }
running() { podman ps -q --filter label=com.docker.compose.project=$project \
              --filter label=com.docker.compose.service="$1" --filter status=running | wc -l; }
for s in redis bus listener auth mailbox queue; do
  [ "$(running $s)" -eq 1 ] || fail "service $s: $(running $s) containers running, want 1"
done
for s in guard relay; do
  [ "$(running $s)" -eq 2 ] || fail "service $s: $(running $s) containers running, want 2"
done
# Host network, and not one port published.
for c in $(podman ps -q --filter label=com.docker.compose.project=$project); do
  mode=$(podman inspect --format '{{.HostConfig.NetworkMode}}' "$c")
  [ "$mode" = host ] || fail "container $c is on network $mode"
  ports=$(podman inspect --format '{{len .HostConfig.PortBindings}}' "$c")
  [ "$ports" = 0 ] || fail "container $c publishes ports"
done

admin() { podman exec -i "$(ctr queue)" samotop-admin "$@"; }
ok=
for _ in $(seq 150); do
  if admin ping --timeout 1000 >"$work/ping" 2>&1; then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || { cat "$work/ping" >&2; fail "actors did not all answer a ping"; }
say "every actor answers: $(tr '\n' ' ' <"$work/ping" | tr -s ' ' | cut -c1-200)"

# Both copies of a scaled service registered with the broker.
for s in guard relay; do
  n=$(podman logs "$(ctr bus)" 2>&1 | grep -c "event=broker_worker_ready service=$s " || true)
  [ "$n" -ge 2 ] || fail "the broker saw $n $s workers register, want 2"
done

# The image's HEALTHCHECK, run by podman in each kind of container.
for s in bus listener guard mailbox redis; do
  podman healthcheck run "$(ctr $s)" >/dev/null 2>&1 || fail "healthcheck of $s fails"
done

# 5. A domain and accounts, made inside a container.
admin domain add deploy.test >/dev/null
echo alice-pw | admin user add alice@deploy.test >/dev/null
echo bob-pw | admin user add bob@deploy.test >/dev/null

# 6. Mail in from outside (MTA) and from a user (MSA), read back.
mail_dir=$(podman volume inspect --format '{{.Mountpoint}}' "${project}_mail")
SAMOTOP_MAIL_DIR=$mail_dir "$py" - <<'EOF'
import glob, imaplib, os, smtplib, ssl, time

def addr(var):
    h, p = os.environ[var].rsplit(":", 1)
    return h, int(p)

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

inbound = (b"From: carol@elsewhere.test\r\nTo: alice@deploy.test\r\n"
           b"Subject: through the MTA\r\nMessage-ID: <mta.1@elsewhere.test>\r\n"
           b"\r\nInbound body line.\r\n")
with smtplib.SMTP(*addr("SAMOTOP_LISTEN_MTA"), local_hostname="mx.elsewhere.test",
                  timeout=30) as c:
    code, _ = c.ehlo()
    assert code == 250, code
    c.sendmail("carol@elsewhere.test", ["alice@deploy.test"], inbound)
    # A recipient that is not ours is refused (RFC 5321 3.6.2: no open relay).
    c.mail("carol@elsewhere.test")
    code, text = c.rcpt("nobody@not-ours.test")
    assert code >= 500, (code, text)
    c.rset()

submitted = (b"From: bob@deploy.test\r\nTo: alice@deploy.test\r\n"
             b"Subject: through the MSA\r\nMessage-ID: <msa.1@deploy.test>\r\n"
             b"\r\nSubmitted body line.\r\n")
with smtplib.SMTP(*addr("SAMOTOP_LISTEN_MSA"), local_hostname="laptop.deploy.test",
                  timeout=30) as c:
    c.starttls(context=ctx)
    c.ehlo()
    try:
        c.login("bob@deploy.test", "wrong-pw")
        raise AssertionError("a wrong password was accepted")
    except smtplib.SMTPAuthenticationError:
        pass
    c.login("bob@deploy.test", "bob-pw")
    c.sendmail("bob@deploy.test", ["alice@deploy.test"], submitted)

want = {b"Inbound body line.", b"Submitted body line."}
deadline = time.time() + 60

# Over IMAP (RFC 3501), after STARTTLS, as alice's mail client would.
m = imaplib.IMAP4(*addr("SAMOTOP_LISTEN_IMAP"), timeout=30)
m.starttls(ssl_context=ctx)
m.login("alice@deploy.test", "alice-pw")
got = set()
while time.time() < deadline and got != want:
    typ, _ = m.select("INBOX")
    assert typ == "OK", typ
    typ, data = m.search(None, "ALL")
    got = set()
    for num in data[0].split():
        typ, msg = m.fetch(num, "(BODY.PEEK[])")
        got |= {w for w in want if w in msg[0][1]}
    if got != want:
        time.sleep(0.5)
m.logout()
assert got == want, "IMAP read back %r of %r" % (got, want)

# And on the Maildir volume, one file each (the store is plain Maildir).
folder = os.path.join(os.environ["SAMOTOP_MAIL_DIR"], "deploy.test", "alice")
files = glob.glob(os.path.join(folder, "new", "*")) + \
        glob.glob(os.path.join(folder, "cur", "*"))
found = set()
for f in files:
    with open(f, "rb") as fh:
        body = fh.read()
    found |= {w for w in want if w in body}
assert found == want, "Maildir %s holds %r of %r" % (folder, found, want)
print("test_container: both messages read back over IMAP, and found in the Maildir volume")
EOF

# 7. Every container still runs: nothing crashed on the way.
for s in redis bus listener auth guard mailbox queue relay; do
  want=1; case $s in guard|relay) want=2 ;; esac
  [ "$(running $s)" -eq $want ] || fail "service $s: $(running $s) running at the end, want $want"
done
# The messages are in Redis's AOF, on the redis volume (appendfsync always).
redis_dir=$(podman volume inspect --format '{{.Mountpoint}}' "${project}_redis")
ls "$redis_dir"/appendonlydir/*.aof >/dev/null 2>&1 || ls "$redis_dir"/*.aof >/dev/null 2>&1 ||
  fail "no AOF on the redis volume"
compose down -v -t 10 >/dev/null 2>&1 || fail "docker-compose down failed"

# 8. The image alone: its default command is samotopd, which runs Redis, the
# broker and every actor in one container (ports 20350-20379).
aio=${project}_aio
podman run -d --name "$aio" --network host --no-healthcheck \
  --label com.docker.compose.project=$project \
  -e SAMOTOP_REDIS_PORT=$((base + 56)) \
  -e SAMOTOP_BUS_CLIENTS=tcp://127.0.0.1:$((base + 50)) \
  -e SAMOTOP_BUS_WORKERS=tcp://127.0.0.1:$((base + 51)) \
  -e SAMOTOP_BUS_TRACE=tcp://127.0.0.1:$((base + 52)) \
  -e SAMOTOP_BROKER_CLIENTS=tcp://127.0.0.1:$((base + 50)) \
  -e SAMOTOP_BROKER_WORKERS=tcp://127.0.0.1:$((base + 51)) \
  -e SAMOTOP_BROKER_TRACE=tcp://127.0.0.1:$((base + 52)) \
  -e SAMOTOP_LISTEN_MTA=127.0.0.1:$((base + 60)) \
  -e SAMOTOP_LISTEN_MSA=127.0.0.1:$((base + 61)) \
  -e SAMOTOP_LISTEN_SMTPS=127.0.0.1:$((base + 62)) \
  -e SAMOTOP_LISTEN_IMAP=127.0.0.1:$((base + 63)) \
  -e SAMOTOP_LISTEN_IMAPS=127.0.0.1:$((base + 64)) \
  -e SAMOTOP_LISTEN_LMTP=127.0.0.1:$((base + 65)) \
  "$tag" >/dev/null || fail "podman run $tag (samotopd) failed"
ok=
for _ in $(seq 150); do
  if podman exec "$aio" samotop-health >"$work/ping" 2>&1; then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || { podman logs --tail 30 "$aio" >&2; cat "$work/ping" >&2; fail "samotopd in the image: not every actor answers"; }
"$py" - "$((base + 60))" <<'EOF2'
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30) as c:
    code, text = c.ehlo("mx.elsewhere.test")
    assert code == 250 and b"SIZE" in text, (code, text)
EOF2
say "samotopd alone in the image answers"

# 9. One more guard beside it, with its HTTP door on (as in compose.yaml and
# on Kubernetes): the HEALTHCHECK then asks the process's own /health, and
# /ready, /live and /metrics answer as the probes and Prometheus expect.
guard=${project}_guard_http
podman run -d --name "$guard" --network host --no-healthcheck \
  --label com.docker.compose.project=$project \
  -e SAMOTOP_REDIS_PORT=$((base + 56)) \
  -e SAMOTOP_BUS_CLIENTS=tcp://127.0.0.1:$((base + 50)) \
  -e SAMOTOP_BUS_WORKERS=tcp://127.0.0.1:$((base + 51)) \
  -e SAMOTOP_METRICS_LISTEN=127.0.0.1:$((base + 90)) \
  "$tag" samotop-guard >/dev/null || fail "podman run samotop-guard failed"
ok=
for _ in $(seq 150); do
  if podman exec "$guard" samotop-health >"$work/health" 2>&1; then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || { cat "$work/health" >&2; fail "guard's /health never passed"; }
"$py" - "$((base + 90))" <<'EOF2'
import sys, urllib.request
base = "http://127.0.0.1:%s" % sys.argv[1]
for path in ("/ready", "/live"):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        assert r.status == 200, (path, r.status)
with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
    text = r.read().decode()
assert "samotop_" in text and "# TYPE" in text, text[:500]
EOF2
# The broker gone, /health must fail: the check can say no.
podman rm -f -t 10 "$aio" >/dev/null
ok=
for _ in $(seq 100); do
  if ! podman exec "$guard" samotop-health >"$work/health" 2>&1; then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || fail "guard's /health still passes with no broker"
podman rm -f -t 10 "$guard" >/dev/null
say "HTTP health: /health, /ready, /live and /metrics answer; /health fails without a broker"
say "PASS"
