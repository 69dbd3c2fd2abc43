/* engine/model/v4_synth.h — random but well-scaled DeepSeek-V4 weights for synthetic checkpoints
 * and test models: any tensor of the table (config.h), any byte range of it, deterministically.
 *
 * Values keep activations O(1) through every layer: norms near 1, projections uniform with
 * variance ~1/k, e4m3 codes of magnitude 0.25..1.875 with e8m0 block scales near 1/sqrt(k), random
 * e2m1 nibbles with scales near 1/(2 sqrt(k)), hash-routing rows of distinct experts. Every element
 * is a pure function of (seed, tensor name, element index) — a counter-based generator — so a tensor
 * can be produced in pieces, in any order, by any number of threads, with the same bytes.
 * No state; thread-safe.
 */
#ifndef MS_ENGINE_MODEL_V4_SYNTH_H
#define MS_ENGINE_MODEL_V4_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "engine/model/config.h"

/* Bytes of t as stored (elements x dtype size). */
uint64_t ms_v4_spec_bytes(const ms_v4_tensor_spec *t);

/* Fills out[0, n) with bytes [off, off + n) of tensor t. off and n must be multiples of the dtype
 * size (I64 rows of tid2eid: multiples of a whole row, n_active_experts * 8 bytes). */
void ms_v4_synth_fill(const ms_v4_config *c, const ms_v4_tensor_spec *t, uint64_t seed,
                      uint64_t off, uint64_t n, void *out);

#endif
