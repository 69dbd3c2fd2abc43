#!/bin/sh
# tests/test_hardening.sh — regression cases from the hostile-input run (issue "Hardening"): each
# input once hung, cost unbounded time, crashed with a signal, printed invalid output with exit 0
# or gave an unclear error. Every case checks the exit status and the message.
# usage: test_hardening.sh PATH/TO/moestream FIXTURE_DIR   (FIXTURE_DIR: tests/fixtures/v4/flash_like)
set -u
M=${1:?usage: test_hardening.sh PATH/TO/moestream FIXTURE_DIR}
FX=${2:?usage: test_hardening.sh PATH/TO/moestream FIXTURE_DIR}
case $M in /*) ;; *) M=$(pwd)/$M ;; esac
case $FX in /*) ;; *) FX=$(pwd)/$FX ;; esac
command -v python3 >/dev/null 2>&1 || { echo "FAIL: python3 is needed (JSON checks)"; exit 1; }
. "$(dirname "$0")/lib.sh"
err_has() { grep -q -- "$2" "$T/$1.err" || { fail "$1: stderr lacks '$2':"; cat "$T/$1.err"; }; }
# model DIR: a model directory whose files link to the fixture's, to be changed one at a time
model() {
    mkdir -p "$T/$1"
    for f in "$FX"/config.json "$FX"/*.safetensors "$FX"/model.safetensors.index.json; do
        ln -sf "$f" "$T/$1/"
    done
}
# setcfg DIR 'python expression on c': a changed config.json
setcfg() {
    rm -f "$T/$1/config.json"
    python3 - "$FX/config.json" "$T/$1/config.json" "$2" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
exec(sys.argv[3])
json.dump(c, open(sys.argv[2], "w"))
PY
}
# cfg_case NAME 'python on c' STATUS 'expected stderr text': logits on the fixture with that config
cfg_case() {
    model "$1"
    setcfg "$1" "$2"
    run "$1" logits -m "$T/$1" --tokens 1
    [ "$rc" -eq "$3" ] || fail "$1 ($2): exit $rc, expected $3"
    err_has "$1" "$4"
}
TOK=0,265,460,508,411,420,499

# --- 1. non-regular files where files are expected: refused at once, naming what they are
model fifo_cfg
rm "$T/fifo_cfg/config.json" && mkfifo "$T/fifo_cfg/config.json"
run fifo_cfg logits -m "$T/fifo_cfg" --tokens 1
[ "$rc" -eq 1 ] || fail "FIFO config.json: exit $rc, expected 1"
err_has fifo_cfg "config.json: is a FIFO"
model fifo_shard
rm "$T/fifo_shard/model-00002-of-00002.safetensors" && mkfifo "$T/fifo_shard/model-00002-of-00002.safetensors"
run fifo_shard logits -m "$T/fifo_shard" --tokens 1
[ "$rc" -eq 1 ] || fail "FIFO shard: exit $rc, expected 1"
err_has fifo_shard "model-00002-of-00002.safetensors: is a FIFO"
model fifo_index
rm "$T/fifo_index/model.safetensors.index.json" && mkfifo "$T/fifo_index/model.safetensors.index.json"
run fifo_index logits -m "$T/fifo_index" --tokens 1
[ "$rc" -eq 1 ] || fail "FIFO index: exit $rc, expected 1"
err_has fifo_index "index.json: is a FIFO"

# --- 2. unbounded costs: refused by bounds, or bounded
cfg_case experts 'c["n_routed_experts"] = 4294967295' 1 "'n_routed_experts': 4294967295 is outside 1..4096"
cfg_case experts24 'c["n_routed_experts"] = 2 ** 24' 1 "'n_routed_experts': 16777216 is outside 1..4096"
cfg_case window 'c["sliding_window"] = 4194304' 1 "'sliding_window': 4194304 is outside"
cfg_case sinkhorn 'c["hc_sinkhorn_iters"] = 10 ** 9' 1 "'hc_sinkhorn_iters': 1000000000 is outside"
cfg_case topk 'c["index_topk"] = 10 ** 9' 1 "'index_topk': 1000000000 is outside"
model window_max
setcfg window_max 'c["sliding_window"] = 1048576'
# the largest window allowed, with a 3-token prompt: the session holds 3 positions, not 2^20
run window_max logits -m "$T/window_max" --tokens 1,2,3
[ "$rc" -eq 0 ] || { fail "sliding_window 2^20, 3 tokens: exit $rc"; cat "$T/window_max.err"; }
run top_huge logits -m "$FX" --tokens $TOK --top 1000000000
[ "$rc" -eq 0 ] || fail "--top 10^9: exit $rc"
python3 - "$T/top_huge.out" <<'PY' || fail "--top 10^9: not every id exactly once, best first"
import json, sys
top = json.load(open(sys.argv[1]))["positions"][0]["top"]
assert sorted(t["id"] for t in top) == list(range(512)), len(top)
lp = [t["logprob"] for t in top]
assert lp == sorted(lp, reverse=True)
PY

# --- 4. configs that passed validation and then divided by log(1), log(0) or log(-1)
Y='c["rope_scaling"] = dict(type="yarn", factor=16, original_max_position_embeddings=64'
cfg_case theta 'c["compress_rope_theta"] = 1.0' 1 "'compress_rope_theta': 1 is outside (1,"
cfg_case beta_fast "$Y, beta_fast=0, beta_slow=1)" 1 "'rope_scaling.beta_fast': 0 is outside"
cfg_case beta_slow "$Y, beta_fast=32, beta_slow=-1)" 1 "'rope_scaling.beta_slow': -1 is outside"

# --- 5. NaN in the output: an error naming the position, never "-nan" with exit 0
cfg_case hc_eps 'c["hc_eps"] = 1e308' 1 "'hc_eps': 1e+308 is outside"
cfg_case scaling 'c["routed_scaling_factor"] = 1e308' 1 "'routed_scaling_factor': 1e+308 is outside"
# poke DIR TENSOR OFFSET HEXBYTES: a copy of the shard that holds TENSOR, bytes changed in place
poke() {
    python3 - "$FX" "$T/$1" "$2" "$3" "$4" <<'PY'
import json, os, struct, sys
fx, out, name, off, hexb = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
shard = json.load(open(os.path.join(fx, "model.safetensors.index.json")))["weight_map"][name]
b = bytearray(open(os.path.join(fx, shard), "rb").read())
n = struct.unpack("<Q", b[:8])[0]
start = 8 + n + json.loads(b[8:8 + n])[name]["data_offsets"][0] + off
b[start:start + len(bytes.fromhex(hexb))] = bytes.fromhex(hexb)
os.remove(os.path.join(out, shard))
open(os.path.join(out, shard), "wb").write(b)
PY
}
model nanw
poke nanw head.weight $((2 * 5 * 128)) ff7f # head row 5, column 0: a BF16 NaN
run nanw logits -m "$T/nanw" --tokens $TOK
[ "$rc" -eq 1 ] || fail "NaN head weight: exit $rc, expected 1"
err_has nanw "non-finite logit"
err_has nanw "token id 5"
err_has nanw "in the final head"
[ -s "$T/nanw.out" ] && fail "NaN head weight: something was printed on stdout"
model nanl
poke nanl layers.1.ffn.shared_experts.w2.scale 0 ff # an e8m0 NaN scale in layer 1's shared expert
run nanl logits -m "$T/nanl" --tokens $TOK
[ "$rc" -eq 1 ] || fail "NaN scale in layer 1: exit $rc, expected 1"
err_has nanl "first NaN/Inf appeared at position 0 in layer 1 (moe)"
# the same two on the Vulkan forward pass (its hc_mix watches every sub-layer's streams)
run nanwv logits -m "$T/nanw" --tokens $TOK --backend vulkan
[ "$rc" -eq 1 ] || fail "NaN head weight (vulkan): exit $rc, expected 1"
err_has nanwv "token id 5"
err_has nanwv "in the final head"
run nanlv logits -m "$T/nanl" --tokens $TOK --backend vulkan
[ "$rc" -eq 1 ] || fail "NaN scale in layer 1 (vulkan): exit $rc, expected 1"
err_has nanlv "first NaN/Inf appeared at position 0 in layer 1 (moe)"
d=$(printf '%s/bad\377name' "$T")
mkdir "$d" && cp "$FX"/* "$d"/
run utf8 logits -m "$d" --tokens 1,2
[ "$rc" -eq 0 ] || fail "non-UTF-8 path: exit $rc"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["model"].endswith("bad\ufffdname"), d["model"]' "$T/utf8.out" ||
    fail "non-UTF-8 path: output is not valid JSON with U+FFFD in the name"

# --- 6. write errors are failures with a message
for c in "logits -m $FX --tokens 1" "doctor" "doctor --json" "--help" "--version" "logits --help"; do
    # shellcheck disable=SC2086
    timeout 60 "$M" $c >/dev/full 2>"$T/full.err"
    rc=$?
    [ "$rc" -eq 1 ] || fail "'$c' > /dev/full: exit $rc, expected 1"
    grep -q "error writing standard output" "$T/full.err" || fail "'$c' > /dev/full: no message"
done

# --- 7. clearer errors
long=$T/$(python3 -c 'print("a" * 4200)')
run longpath logits -m "$long" --tokens 1
[ "$rc" -eq 1 ] || fail "4 KB path: exit $rc"
err_has longpath "File name too long"
python3 -c 'print(",".join(["1"] * 30000 + ["x"] + ["2"] * 30000))' >"$T/bad_tokens.txt"
run badtok logits -m "$FX" --tokens "$(cat "$T/bad_tokens.txt")"
[ "$rc" -eq 2 ] || fail "bad token list: exit $rc, expected 2"
err_has badtok "item 30000 is not a token id"
[ "$(wc -c <"$T/badtok.err")" -lt 1000 ] || fail "bad token list: $(wc -c <"$T/badtok.err") bytes of stderr"
run badtokf logits -m "$FX" --tokens-file "$T/bad_tokens.txt"
[ "$rc" -eq 2 ] || fail "--tokens-file with a bad item: exit $rc"
err_has badtokf "item 30000 is not a token id"
echo "$TOK" | tr ',' '\n' >"$T/tokens.txt"
run tokf logits -m "$FX" --tokens-file "$T/tokens.txt"
run tok logits -m "$FX" --tokens "$TOK"
[ "$rc" -eq 0 ] && cmp -s "$T/tok.out" "$T/tokf.out" || fail "--tokens-file (one id per line) differs from --tokens"
run sp1 logits -m "$FX" --tokens " 1, 2"
[ "$rc" -eq 0 ] || fail "' 1, 2' refused"
run sp2 logits -m "$FX" --tokens "1 ,2 "
[ "$rc" -eq 0 ] || fail "'1 ,2 ' refused"
cmp -s "$T/sp1.out" "$T/sp2.out" || fail "' 1, 2' and '1 ,2 ' differ"
run emptyitem logits -m "$FX" --tokens "1,,2"
[ "$rc" -eq 2 ] || fail "1,,2: exit $rc"
err_has emptyitem "empty item"
ln -s loop_b "$T/loop_a" && ln -s loop_a "$T/loop_b"
run loop logits -m "$T/loop_a" --tokens 1
[ "$rc" -eq 1 ] || fail "symlink loop: exit $rc"
err_has loop "Too many levels of symbolic links"
model bigcfg
rm "$T/bigcfg/config.json" && truncate -s 200M "$T/bigcfg/config.json"
run bigcfg logits -m "$T/bigcfg" --tokens 1
[ "$rc" -eq 1 ] || fail "200 MB config: exit $rc"
err_has bigcfg "is 200.0 MiB, more than the 16.0 MiB"
cfg_case ratio_str 'c["compress_ratios"][1] = "4"' 1 "'compress_ratios'\[1\]: \"4\" (a string)"
cfg_case ratio_big 'c["compress_ratios"][2] = 4294967296' 1 "'compress_ratios'\[2\]: 4294967296,"
cfg_case notype 'c["rope_scaling"] = {"factor": 16}' 1 "has no 'type'"
cfg_case shared0 'c["n_shared_experts"] = 0' 1 "'n_shared_experts': 0 is outside 1..1"
[ "$(grep -c warn "$T/shared0.err")" -eq 0 ] || fail "n_shared_experts 0: warnings before the error"
cfg_case ratios0 'c["compress_ratios"] = []' 1 "0 entries, fewer than num_hidden_layers"
cfg_case layers3 'c["num_hidden_layers"] = 3' 1 "has layer 3, but config.json says num_hidden_layers = 3"
run dirjson doctor --dir --json
[ "$rc" -eq 2 ] || fail "doctor --dir --json: exit $rc, expected 2"
err_has dirjson "got the option '--json'"
MOESTREAM_LOG=loud timeout 60 "$M" --version >/dev/null 2>"$T/log.err"
grep -q "MOESTREAM_LOG='loud' is not one of" "$T/log.err" || fail "unknown MOESTREAM_LOG not reported"

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "ok"
