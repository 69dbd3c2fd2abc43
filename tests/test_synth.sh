#!/bin/sh
# tests/test_synth.sh — `moestream synth`: the output is a checkpoint the loader and the CPU
# reference accept, bytes depend on the seed but not on threads or shard size, and bad usage is
# refused. usage: test_synth.sh PATH/TO/moestream FIXTURE_CONFIG_JSON
set -u
M=${1:?usage: test_synth.sh PATH/TO/moestream CONFIG_JSON}
CFG=${2:?usage: test_synth.sh PATH/TO/moestream CONFIG_JSON}
case $M in /*) ;; *) M=$(pwd)/$M ;; esac
. "$(dirname "$0")/lib.sh"

run a synth -o "$T/a" --config "$CFG" --seed 5 --threads 1
[ "$rc" -eq 0 ] || { fail "synth: exit $rc"; show a; }
run b synth -o "$T/b" --config "$CFG" --seed 5 --threads 3 --shard-size 1
[ "$rc" -eq 0 ] || fail "synth --threads 3: exit $rc"
cmp -s "$T/a/model-00001-of-00001.safetensors" "$T/b/model-00001-of-00001.safetensors" ||
    fail "the same seed with 1 and 3 threads gave different bytes"
run c synth -o "$T/c" --config "$CFG" --seed 6
cmp -s "$T/a/model-00001-of-00001.safetensors" "$T/c/model-00001-of-00001.safetensors" &&
    fail "seeds 5 and 6 gave the same bytes"
run la logits -m "$T/a" --tokens 1,2,3,4,5,6,7,8,9
[ "$rc" -eq 0 ] || { fail "logits on the synthetic model: exit $rc"; show la; }
python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["positions"][0]["top"]; assert t[0]["logprob"] < 0' \
    "$T/la.out" || fail "logits output"
# fewer layers and experts, no MTP: still a valid model
run small synth -o "$T/s" --config "$CFG" --layers 2 --experts 4 --no-mtp
[ "$rc" -eq 0 ] || { fail "synth --layers 2 --experts 4 --no-mtp: exit $rc"; show small; }
run ls logits -m "$T/s" --tokens 3,4
[ "$rc" -eq 0 ] || { fail "logits on the 2-layer model: exit $rc"; show ls; }
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); assert c["num_hidden_layers"]==2 and c["n_routed_experts"]==4 and c["num_nextn_predict_layers"]==0, c' \
    "$T/s/config.json" || fail "config.json of the small model"
# refusals
run again synth -o "$T/a" --config "$CFG"
[ "$rc" -eq 1 ] || fail "synth into a model directory: exit $rc"
grep -q -- "--force" "$T/again.err" || fail "refusal does not mention --force"
run force synth -o "$T/a" --config "$CFG" --seed 5 --force
[ "$rc" -eq 0 ] || fail "--force: exit $rc"
run badl synth -o "$T/x" --config "$CFG" --layers 99
[ "$rc" -eq 2 ] || fail "--layers 99: exit $rc"
run bade synth -o "$T/x" --config "$CFG" --experts 1
[ "$rc" -eq 2 ] || fail "--experts 1: exit $rc"
run badlike synth -o "$T/x" --like nano
[ "$rc" -eq 2 ] || fail "--like nano: exit $rc"
run noout synth
[ "$rc" -eq 2 ] || fail "no -o: exit $rc"

if [ "$fails" -ne 0 ]; then
    echo "$fails check(s) failed"
    exit 1
fi
echo "ok"
