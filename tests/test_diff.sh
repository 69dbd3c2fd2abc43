#!/bin/sh
# tests/test_diff.sh — `moestream diff` on a fixture (the CPU reference against Vulkan, here
# lavapipe): exit 0, every stage of every layer listed (the compress_ratios decide which), the
# indexer's selections and the routes agree, the JSON output parses and says the same; usage
# errors exit 2. 160 tokens: the indexer chooses (nb > index_topk 8 from position 35) and the
# ratio-128 layer emits its first row at 127. The verdict logic itself: tests/test_diff.c.
# usage: test_diff.sh PATH/TO/moestream FIXTURE_DIR   (FIXTURE_DIR: tests/fixtures/v4/flash_like)
# Exit 0 pass, 1 fail, 77 when the Vulkan backend cannot open (no device; CI has lavapipe).
set -u
M=${1:?usage: test_diff.sh PATH/TO/moestream FIXTURE_DIR}
FX=${2:?usage: test_diff.sh PATH/TO/moestream FIXTURE_DIR}
case $M in /*) ;; *) M=$(pwd)/$M ;; esac
case $FX in /*) ;; *) FX=$(pwd)/$FX ;; esac
command -v python3 >/dev/null 2>&1 || { echo "FAIL: python3 is needed (JSON checks)"; exit 1; }
. "$(dirname "$0")/lib.sh"

python3 -c 'print(",".join(str((i * 2654435761 + 17) % 512) for i in range(160)))' >"$T/tokens.txt"

run text diff -m "$FX" --tokens-file "$T/tokens.txt"
if [ "$rc" -eq 1 ] && grep -q "no usable Vulkan device" "$T/text.err"; then
    echo "SKIP: no Vulkan device"
    exit 77
fi
[ "$rc" -eq 0 ] || { fail "diff exited $rc, expected 0"; show text; }
grep -q '^verdict: ok' "$T/text.out" || { fail "no ok verdict"; show text; }
grep -q 'DIFFER' "$T/text.out" && fail "a selection or route differs"
grep -q 'top-1 agrees at 160/160 positions' "$T/text.out" || fail "top-1 does not agree everywhere"

run json diff -m "$FX" --tokens-file "$T/tokens.txt" --json
[ "$rc" -eq 0 ] || { fail "diff --json exited $rc"; show json; }
python3 - "$FX/config.json" "$T/json.out" "$T/text.out" <<'PY' || fail "the stages of the JSON output"
import json, sys
c = json.load(open(sys.argv[1]))
d = json.load(open(sys.argv[2]))
text = open(sys.argv[3]).read().splitlines()
base = ["attn.x", "attn.q", "attn.kv", "attn.o", "attn.y", "attn.h",
        "ffn.x", "ffn.score", "ffn.route", "ffn.weights", "ffn.y", "ffn.h"]
order = ["attn.x", "attn.q", "attn.kv", "attn.cmp_rows", "attn.idx_score", "attn.idx_sel",
         "attn.o", "attn.y", "attn.h", "ffn.x", "ffn.score", "ffn.route", "ffn.weights",
         "ffn.y", "ffn.h"]
want = []
L = c["num_hidden_layers"]
for l in range(L):
    r = c["compress_ratios"][l]
    s = set(base) | ({"attn.cmp_rows"} if r else set()) | ({"attn.idx_score", "attn.idx_sel"} if r == 4 else set())
    want += [(l, k) for k in order if k in s]
want.append((L, "head.logits"))
got = [(s["layer"], s["stage"]) for s in d["stages"]]
ok = True
if got != want:
    print("stages: got", got, "want", want); ok = False
for s in d["stages"]:
    if s["positions"] != 160 and s["stage"] != "attn.idx_score" or s["missing"] or s["bad"]:
        print("stage", s); ok = False
    if s["stage"] in ("attn.idx_sel", "ffn.route") and s["differ_positions"]:
        print("differs", s); ok = False
    if s["stage"] == "attn.idx_score" and s["positions"] != 160 - 35:
        print("idx_score positions", s); ok = False
if not d["verdict"]["ok"] or d["logits"]["top1_agree"] != 160 or len(d["logits"]["positions"]) != 160:
    print("verdict / logits", d["verdict"], d["logits"]["top1_agree"]); ok = False
if not d["logits"]["max_dlogprob"] < 1e-3:
    print("max |d log-prob|", d["logits"]["max_dlogprob"]); ok = False
# the table lists the same rows
rows = [(int(t.split()[0]) if t.split()[0] != "head" else L, t.split()[1]) for t in text
        if t and (t.split()[0].isdigit() or t.startswith("head "))]
if rows != want:
    print("table rows", rows); ok = False
sys.exit(0 if ok else 1)
PY

# usage errors: exit 2 with a message
run nomodel diff --tokens 1
[ "$rc" -eq 2 ] && grep -q -- '-m MODEL_DIR is required' "$T/nomodel.err" || fail "no -m: exit $rc"
run badthr diff -m "$FX" --tokens 1 --threshold -1
[ "$rc" -eq 2 ] && grep -q -- '--threshold needs a positive number' "$T/badthr.err" || fail "--threshold -1: exit $rc"
run badtok diff -m "$FX" --tokens 1,,2
[ "$rc" -eq 2 ] && grep -q 'empty item' "$T/badtok.err" || fail "--tokens 1,,2: exit $rc"
run bigtok diff -m "$FX" --tokens 1,512
[ "$rc" -eq 2 ] && grep -q 'not below vocab_size' "$T/bigtok.err" || fail "token 512: exit $rc"
# a threshold no F32 backend meets: exit 3 and a verdict naming a stage
run tight diff -m "$FX" --tokens 1,2 --threshold 1e-12
[ "$rc" -eq 3 ] && grep -q '^verdict: first bad stage: layer 0 attn\.' "$T/tight.out" || { fail "--threshold 1e-12: exit $rc"; show tight; }

[ "$fails" -eq 0 ] || exit 1
echo "test_diff.sh: ok"
