# tests/lib.sh — shared by the shell tests (sourced): a scratch directory $T removed at exit, a
# failure counter, and `run NAME ARGS...` which runs $M with ARGS under a 60 s limit (a hang is a
# failure, not a stuck test), leaving stdout in $T/NAME.out, stderr in $T/NAME.err, status in $rc.
T=$(mktemp -d "${TMPDIR:-/tmp}/ms-test-XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT INT TERM
fails=0
fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}
run() {
    name=$1
    shift
    timeout 60 "$M" "$@" >"$T/$name.out" 2>"$T/$name.err"
    rc=$?
    [ "$rc" -eq 124 ] && fail "$name: timed out after 60 s (hang)"
}
show() {
    echo "--- $1 stdout:"
    cat "$T/$1.out"
    echo "--- $1 stderr:"
    cat "$T/$1.err"
}
