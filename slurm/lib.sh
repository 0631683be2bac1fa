# shellcheck shell=bash disable=SC2034  # sets variables for the scripts that source it
# Shared by slurm/up and slurm/down (sourced, not run).
#
# Everything the development cluster owns lives in one state directory:
#   started/<daemon>.pid   daemons that slurm/up started (slurm/down stops only these)
#   run/ log/ secret/      pid files and sockets, logs, munge key and database password
#   mariadb/ slurmctld/ slurmd/ fake-gpu/   data of the daemons
# The configuration goes beside $SLURM_CONF (default /etc/slurm/slurm.conf), which
# is where every Slurm command looks for it.

SLURM_TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE_DIR=${UBSAFE_SLURM_STATE:-/var/lib/ubsafe-slurm}
SLURM_CONF_FILE=${SLURM_CONF:-/etc/slurm/slurm.conf}
CONF_DIR=$(dirname "$SLURM_CONF_FILE")
CONF_MARKER="# Managed by ubsafe slurm/up"
MUNGE_SOCKET=/run/munge/munge.socket.2
# Start order; slurm/down stops them in reverse.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

# Daemons run as root (SlurmUser=root); re-run through passwordless sudo if we can.
become_root() {
	((EUID == 0)) && return 0
	if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		exec sudo -n --preserve-env=SLURM_CONF,UBSAFE_SLURM_STATE "$0" "$@"
	fi
	die "$PROG starts and stops root daemons; run it as root (sudo $0 $*)"
}

# Serialise concurrent up/down calls on one state directory.
take_lock() {
	mkdir -p "$STATE_DIR"
	exec {LOCK_FD}>"$STATE_DIR/lock"
	flock -w 600 "$LOCK_FD" || die "another slurm/up or slurm/down holds $STATE_DIR/lock for over 10 min"
}

# The pid that slurm/up recorded for a daemon, if that process is still this daemon.
our_pid() {
	local name=$1 file="$STATE_DIR/started/$1.pid" pid
	[[ -r $file ]] || return 1
	read -r pid <"$file" || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	# Guard against a recycled pid: the process must still carry the daemon's name.
	[[ "$(comm_of "$pid")" == "$name" ]] && alive "$pid" || return 1
	printf '%s\n' "$pid"
}

# The command name of a process (empty once it has gone); no fork, it runs per process.
comm_of() {
	local comm=""
	{ read -r comm <"/proc/$1/comm"; } 2>/dev/null || true
	printf '%s' "$comm"
}

# Pids of every process named $1 that slurm/up did not start. Meaningful only while
# ours is not running: a running slurmd forks short-lived copies of itself per job.
foreign_pids() {
	local name=$1 ours comm dir
	ours=$(our_pid "$name") || ours=""
	for dir in /proc/[0-9]*; do
		comm=""
		{ read -r comm <"$dir/comm"; } 2>/dev/null || continue
		[[ $comm == "$name" && ${dir#/proc/} != "$ours" ]] && alive "${dir#/proc/}" &&
			printf '%s\n' "${dir#/proc/}"
	done
	return 0
}

# True while a process runs. An exited daemon stays a zombie until its parent
# (init, once slurm/up has returned) reaps it, which can take seconds.
alive() {
	local stat="" fields
	{ read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
	read -r -a fields <<<"${stat##*) }"
	[[ ${fields[0]-} != Z ]]
}

# Stop a daemon that slurm/up started: SIGTERM, then SIGKILL after $2 seconds.
stop_ours() {
	local name=$1 grace=${2:-30} pid i
	if pid=$(our_pid "$name"); then
		log "stopping $name (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < grace * 10; i++)); do
			alive "$pid" || break
			sleep 0.1
		done
		if alive "$pid"; then
			log "$name (pid $pid) ignored SIGTERM for ${grace}s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$STATE_DIR/started/$name.pid"
}

# The last lines of a log, indented, for error messages.
log_tail() {
	[[ -r $1 ]] && tail -n "${2:-15}" "$1" | sed 's/^/    /'
}

# True when $1 was written by slurm/up (or does not exist).
is_ours_or_absent() {
	[[ ! -e $1 ]] || head -n 1 "$1" | grep -qF "$CONF_MARKER"
}
