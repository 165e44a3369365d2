# bench/inbound/samotop.sh - sourced by bench/inbound/run and bench/idle/run:
# start and stop one samotopd for a benchmark, on loopback, with its data
# under /tmp/bench-NAME/ (the harness in /work/shared/bench may empty
# Maildirs only under /tmp/bench-*).
#
#   samotop_build                 builds the executables (RelWithDebInfo) of
#                                 the commit checked out (git archive HEAD into
#                                 /tmp/bench-samotop-src; BENCH_TREE=work builds
#                                 the working tree in build/release instead)
#                                 and copies them to $BENCH_BIN, so that a
#                                 rebuild by someone else during a long run
#                                 changes nothing under it
#   samotop_start NAME BASE [VAR=VALUE...]
#                                 samotopd with data in /tmp/bench-NAME/data,
#                                 ports BASE..BASE+19 (MTA on BASE+10, Redis on
#                                 BASE+6, bus on BASE..BASE+2), SAMOTOP_* settings
#                                 from the arguments; domain example.test and
#                                 user user@example.test; one probe message
#                                 checks that it lands in
#                                 /tmp/bench-NAME/data/mail/example.test/user/new
#   samotop_stop NAME             SIGTERM to that samotopd (it stops its tree),
#                                 SIGKILL after 20 s
#
# Every process is started and stopped by PID; samotopd's children die with
# it (PR_SET_PDEATHSIG), so nothing outlives a killed run.

: "${BENCH_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${BENCH_BIN:=/tmp/bench-samotop-bin}"
declare -A SAMOTOP_PID=()

samotop_log() { echo "bench: $*" >&2; }

# The commit the executables were built from, with "-dirty" when the files
# they are built from differ from it.
samotop_commit() {
	local c
	c=$(git -C "$BENCH_SRC" rev-parse --short HEAD)
	if [ -n "$(git -C "$BENCH_SRC" status --porcelain -- lib bus actors supervisor tools CMakeLists.txt cmake 2>/dev/null)" ]; then
		c=$c-dirty
	fi
	echo "$c"
}

samotop_build() {
	local t=(samotopd samotop-bus samotop-listener samotop-auth samotop-guard
		samotop-mailbox samotop-queue samotop-relay samotop-admin)
	local src=$BENCH_SRC bld=$BENCH_SRC/build/release x
	case $BENCH_BIN in /tmp/bench-*) ;; *) echo "BENCH_BIN must be under /tmp/bench-*" >&2; return 1 ;; esac
	if [ "${BENCH_TREE:-head}" = head ]; then
		# The committed tree, exported: others' uncommitted work in the
		# same checkout stays out of the measurement.
		src=/tmp/bench-samotop-src bld=/tmp/bench-samotop-src/build
		rm -rf "$src"
		mkdir -p "$src"
		git -C "$BENCH_SRC" archive HEAD | tar -x -C "$src"
		git -C "$BENCH_SRC" rev-parse --short HEAD >"$src/.commit"
	fi
	# The exported tree is configured without the tests: they are not run
	# here, and a commit whose tests/ does not configure must not stop the
	# benchmark (build/release, the lead's, keeps its settings).
	local opts=()
	[ "${BENCH_TREE:-head}" = head ] && opts=(-DSAMOTOP_TESTS=OFF)
	cmake -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${opts[@]}" >/dev/null
	# Only what the benchmark runs: a test that does not build must not stop it.
	make -C "$bld" -j2 "${t[@]}" >/dev/null
	rm -rf "$BENCH_BIN"
	mkdir -p "$BENCH_BIN"
	for x in "${t[@]}"; do cp "$bld/bin/$x" "$BENCH_BIN/"; done
	if [ "${BENCH_TREE:-head}" = head ]; then
		cp "$src/.commit" "$BENCH_BIN/COMMIT"
	else
		samotop_commit >"$BENCH_BIN/COMMIT"
	fi
}

# samotop_env NAME BASE: the environment of that instance, one VAR=VALUE a line.
samotop_env() {
	local dir=/tmp/bench-$1 p=$2
	cat <<-ENV
	SAMOTOP_DATA=$dir/data
	SAMOTOP_REDIS_PORT=$((p + 6))
	SAMOTOP_BUS_CLIENTS=tcp://127.0.0.1:$p
	SAMOTOP_BUS_WORKERS=tcp://127.0.0.1:$((p + 1))
	SAMOTOP_BUS_TRACE=tcp://127.0.0.1:$((p + 2))
	SAMOTOP_BROKER_CLIENTS=tcp://127.0.0.1:$p
	SAMOTOP_BROKER_WORKERS=tcp://127.0.0.1:$((p + 1))
	SAMOTOP_BROKER_TRACE=tcp://127.0.0.1:$((p + 2))
	SAMOTOP_LISTEN_MTA=127.0.0.1:$((p + 10))
	SAMOTOP_LISTEN_MSA=127.0.0.1:$((p + 11))
	SAMOTOP_LISTEN_SMTPS=127.0.0.1:$((p + 12))
	SAMOTOP_LISTEN_IMAP=127.0.0.1:$((p + 13))
	SAMOTOP_LISTEN_IMAPS=127.0.0.1:$((p + 14))
	SAMOTOP_LISTEN_LMTP=127.0.0.1:$((p + 15))
	SAMOTOP_HOSTNAME=mx.example.test
	ENV
}

# samotop_run NAME BASE CMD...: CMD in that instance's environment, with
# no SAMOTOP_* setting of the caller's leaking in.
samotop_run() {
	local name=$1 base=$2; shift 2
	env $(samotop_unset) $(samotop_env "$name" "$base") "$@"
}

# -u VAR for every SAMOTOP_* variable of the caller, for env.
samotop_unset() {
	local v
	for v in $(compgen -e | grep '^SAMOTOP_' || true); do echo "-u $v"; done
}

samotop_maildir() { echo "/tmp/bench-$1/data/mail/example.test/user"; }
samotop_pidfile() { echo "/tmp/bench-$1/data/samotopd.pid"; }

samotop_start() {
	local name=$1 base=$2; shift 2
	local dir=/tmp/bench-$name i md pid
	if [ "$base" -lt 19000 ] || [ $((base + 19)) -gt 19099 ]; then
		echo "samotop_start: ports $base..$((base + 19)) leave 19000-19099" >&2; return 1
	fi
	case $name in *[!A-Za-z0-9_.-]*|'') echo "samotop_start: bad name '$name'" >&2; return 1 ;; esac
	rm -rf "$dir/data"
	mkdir -p "$dir/data"
	# A simple command run with & is exec'd by the forked shell: $! is
	# samotopd itself, which the stop signal must reach.
	env $(samotop_unset) $(samotop_env "$name" "$base") "$@" "$BENCH_BIN/samotopd" \
		>"$dir/samotopd.log" 2>&1 &
	pid=$!
	SAMOTOP_PID[$name]=$pid
	for ((i = 0; i < 100; i++)); do
		if samotop_run "$name" "$base" "$BENCH_BIN/samotop-admin" ping --timeout 500 \
			listener guard mailbox >/dev/null 2>&1; then
			break
		fi
		kill -0 "$pid" 2>/dev/null || { echo "samotopd $name exited:" >&2; tail -20 "$dir/samotopd.log" >&2; return 1; }
		sleep 0.2
	done
	[ "$i" -lt 100 ] || { echo "samotopd $name: actors not ready in 20 s" >&2; samotop_stop "$name"; return 1; }
	# Every copy asked for must be up (a copy that failed at start is
	# restarted by samotopd after a back-off).
	local want_l=1 want_m=1 a
	for a in "$@"; do
		case $a in
		SAMOTOP_SUPERVISOR_LISTENER=*) want_l=${a#*=} ;;
		SAMOTOP_SUPERVISOR_MAILBOX=*) want_m=${a#*=} ;;
		esac
	done
	sleep 1 # a copy that fails at start has exited by now
	for ((i = 0; i < 100; i++)); do
		[ "$(ps --ppid "$pid" -o comm= | grep -c '^samotop-listene')" = "$want_l" ] &&
			[ "$(ps --ppid "$pid" -o comm= | grep -c '^samotop-mailbox')" = "$want_m" ] && break
		sleep 0.2
	done
	[ "$i" -lt 100 ] || { echo "samotopd $name: not $want_l listeners and $want_m mailboxes in 20 s" >&2; samotop_stop "$name"; return 1; }
	samotop_run "$name" "$base" "$BENCH_BIN/samotop-admin" domain add example.test >/dev/null
	echo "bench-secret" | samotop_run "$name" "$base" "$BENCH_BIN/samotop-admin" user add user@example.test >/dev/null
	# The probe: one message must land as one file in the Maildir's new/.
	md=$(samotop_maildir "$name")
	/usr/sbin/smtp-source -m 1 -f a@example.test -t user@example.test "127.0.0.1:$((base + 10))" >/dev/null
	for ((i = 0; i < 100; i++)); do
		[ -d "$md/new" ] && [ "$(ls -f "$md/new" | wc -l)" -eq 3 ] && break
		sleep 0.05
	done
	if ! [ -d "$md/tmp" ] || ! [ -d "$md/cur" ] || [ "$(ls -f "$md/new" 2>/dev/null | wc -l)" -ne 3 ]; then
		echo "samotopd $name: the probe message is not in $md/new" >&2
		samotop_stop "$name"
		return 1
	fi
	find "$md/new" "$md/cur" "$md/tmp" -mindepth 1 -maxdepth 1 -type f -delete
	samotop_log "samotopd $name: pid $pid, MTA 127.0.0.1:$((base + 10)), Maildir $md"
}

samotop_stop() {
	local name=$1 pid=${SAMOTOP_PID[$1]:-} i
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then
		echo "samotopd $name ignored SIGTERM for 20 s; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	unset "SAMOTOP_PID[$name]"
}

samotop_stop_all() {
	local n
	for n in "${!SAMOTOP_PID[@]}"; do samotop_stop "$n"; done
}

# The processes of the tree under PID, as "pid name" lines (what load.sh's
# -p samples).
samotop_tree() {
	local root=$1 p
	echo "$root $(cat /proc/$root/comm)"
	for p in $(ps --ppid "$root" -o pid=); do samotop_tree "$p"; done
}
