// shaders/indexer_select.comp — the lightning indexer's top-k: a radix select over the scores of
// shaders/indexer_score.comp, one STAGE per dispatch (layout and the whole algorithm:
// shaders/indexer.h; CPU reference ms_ref_indexer, engine/ref/indexer.c).
// One workgroup per (query t, chunk c of MS_INDEXER_CHUNK keys).
#version 450
#extension GL_GOOGLE_include_directive : require

#include "indexer.h"

layout(constant_id = MS_INDEXER_SPEC_STAGE) const uint STAGE = 0;
layout(local_size_x = MS_INDEXER_WG) in;

layout(push_constant) uniform Push { ms_indexer_push p; };

layout(set = 0, binding = MS_INDEXER_SEL_BIND_POS, std430) readonly restrict buffer Pbuf { uint pos[]; };
layout(set = 0, binding = MS_INDEXER_SEL_BIND_SCRATCH, std430) restrict buffer Sbuf { uint scr[]; };
layout(set = 0, binding = MS_INDEXER_SEL_BIND_SEL, std430) writeonly restrict buffer Obuf { uint sel[]; };

#include "indexer.glsl"

#define WG MS_INDEXER_WG
#define PER MS_INDEXER_PER
#define CHUNK MS_INDEXER_CHUNK

shared uint sh_hist[2048];
shared uint sh_scan[WG];
shared uint sh_res[2];

// A uint whose order is the score order: NaN as -inf, -0 as +0 (integer tests: a compiler may
// not fold them away as it may a float comparison).
uint order_key(uint u) {
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) u = 0xFF800000u;
    if ((u & 0x7FFFFFFFu) == 0u) u = 0u;
    return (u & 0x80000000u) != 0u ? ~u : u | 0x80000000u;
}

// Exclusive prefix sum of v over the workgroup's invocations; *total = the sum of all.
uint wg_scan(uint v, out uint total) {
    const uint tid = gl_LocalInvocationID.x;
    sh_scan[tid] = v;
    barrier();
    for (uint o = 1u; o < WG; o <<= 1) {
        const uint x = tid >= o ? sh_scan[tid - o] : 0u;
        barrier();
        sh_scan[tid] += x;
        barrier();
    }
    const uint incl = sh_scan[tid];
    total = sh_scan[WG - 1u];
    barrier(); // sh_scan free again
    return incl - v;
}

// The bin of the global histogram scr[base .. base + nbins) holding the krem-th highest key (1 <=
// krem <= the histogram's total) and the keys in higher bins: sh_res = (bin, above).
// Invocation i owns the nbins / WG bins from the top down.
void find_bin(uint base, uint nbins, uint krem) {
    const uint tid = gl_LocalInvocationID.x, per = nbins / WG, top = nbins - tid * per;
    uint sum = 0u, total;
    for (uint i = 0u; i < per; i++) sum += scr[base + top - 1u - i];
    uint above = wg_scan(sum, total);
    if (above < krem && krem <= above + sum)
        for (uint i = 0u; i < per; i++) {
            const uint b = top - 1u - i, h = scr[base + b];
            if (above + h >= krem) {
                sh_res[0] = b;
                sh_res[1] = above;
                break;
            }
            above += h;
        }
    barrier();
}

void main() {
    const uint g = gl_WorkGroupID.y * p.groups_x + gl_WorkGroupID.x;
    const uint c = g % p.n_groups_q, t = g / p.n_groups_q;
    if (t >= p.n) return; // whole workgroup, as every return before a barrier below
    const uint nb = visible_blocks(t), k = min(p.topk, nb), tid = gl_LocalInvocationID.x;
    const uint j0 = c * CHUNK, jend = min(j0 + CHUNK, nb), row = t * p.n_keys;
    const uint hist = p.hist_off + t * MS_INDEXER_HIST_WORDS, st = p.st_off + t * MS_INDEXER_STATE_WORDS;
    const uint orow = t * p.topk;

    if (k == nb) { // every visible block, in order
        if (STAGE == 4u) {
            for (uint j = j0 + tid; j < jend; j += WG) sel[orow + j] = j;
            if (c == 0u)
                for (uint j = nb + tid; j < p.topk; j += WG) sel[orow + j] = 0xFFFFFFFFu;
        }
        return;
    }
    if (j0 >= nb) return;

    if (STAGE <= 2u) {
        // which keys count, and which of their bits: the digit of this stage
        uint match_shift = 32u, match = 0u, shift = 21u, nbins = 2048u, krem = k;
        if (STAGE == 1u) {
            find_bin(hist, 2048u, k);
            match_shift = 21u, match = sh_res[0], shift = 10u, krem = k - sh_res[1];
            if (c == 0u && tid == 0u) scr[st + 0u] = match, scr[st + 1u] = krem;
        } else if (STAGE == 2u) {
            const uint b0 = scr[st + 0u], krem1 = scr[st + 1u];
            find_bin(hist + 2048u, 2048u, krem1);
            match_shift = 10u, match = (b0 << 11) | sh_res[0], shift = 0u, nbins = 1024u;
            krem = krem1 - sh_res[1];
            if (c == 0u && tid == 0u) scr[st + 2u] = match, scr[st + 3u] = krem;
        }
        for (uint b = tid; b < nbins; b += WG) sh_hist[b] = 0u;
        barrier();
        // runs of equal bins merge into one shared atomic: scores cluster in a few bins
        uint run_bin = 0xFFFFFFFFu, run_n = 0u;
        for (uint i = 0u; i < PER; i++) {
            const uint j = j0 + i * WG + tid;
            if (j >= jend) break;
            const uint key = order_key(scr[row + j]);
            if (match_shift < 32u && (key >> match_shift) != match) continue;
            const uint d = (key >> shift) & (nbins - 1u);
            if (d != run_bin) {
                if (run_n != 0u) atomicAdd(sh_hist[run_bin], run_n);
                run_bin = d, run_n = 0u;
            }
            run_n++;
        }
        if (run_n != 0u) atomicAdd(sh_hist[run_bin], run_n);
        barrier();
        const uint hs = hist + (STAGE == 0u ? 0u : STAGE == 1u ? 2048u : 4096u);
        for (uint b = tid; b < nbins; b += WG)
            if (sh_hist[b] != 0u) atomicAdd(scr[hs + b], sh_hist[b]);
        return;
    }

    const uint cnt = p.cnt_off + t * p.n_groups_q * 2u;
    if (STAGE == 3u) {
        const uint prefix = scr[st + 2u], krem2 = scr[st + 3u];
        find_bin(hist + 4096u, 1024u, krem2);
        const uint thr = (prefix << 10) | sh_res[0];
        if (c == 0u && tid == 0u) scr[st + 4u] = thr, scr[st + 5u] = krem2 - sh_res[1];
        uint gt = 0u, eq = 0u, total;
        for (uint i = 0u; i < PER; i++) {
            const uint j = j0 + i * WG + tid;
            if (j >= jend) break;
            const uint key = order_key(scr[row + j]);
            gt += key > thr ? 1u : 0u;
            eq += key == thr ? 1u : 0u;
        }
        wg_scan((gt << 16) | eq, total); // both <= CHUNK < 2^16
        if (tid == 0u) scr[cnt + 2u * c] = total >> 16, scr[cnt + 2u * c + 1u] = total & 0xFFFFu;
        return;
    }

    // STAGE 4: the keys > T and the m lowest-index ties, at offsets from the chunks before
    const uint thr = scr[st + 4u], m = scr[st + 5u];
    if (c == 0u)
        for (uint j = k + tid; j < p.topk; j += WG) sel[orow + j] = 0xFFFFFFFFu;
    uint g_before = 0u, e_before = 0u, total;
    for (uint cc = tid; cc < c; cc += WG) g_before += scr[cnt + 2u * cc], e_before += scr[cnt + 2u * cc + 1u];
    wg_scan(g_before, total);
    g_before = total;
    wg_scan(e_before, total);
    e_before = total;
    const uint take = m > e_before ? min(m - e_before, scr[cnt + 2u * c + 1u]) : 0u;
    const uint base = g_before + min(e_before, m);
    // invocation tid: the PER consecutive keys from j1, so the chunk's order is the scan's order
    const uint j1 = j0 + tid * PER;
    uint gl = 0u, el = 0u;
    for (uint i = 0u; i < PER; i++) {
        const uint j = j1 + i;
        if (j >= jend) break;
        const uint key = order_key(scr[row + j]);
        gl += key > thr ? 1u : 0u;
        el += key == thr ? 1u : 0u;
    }
    const uint before = wg_scan((gl << 16) | el, total);
    uint gc = before >> 16, ec = before & 0xFFFFu;
    for (uint i = 0u; i < PER; i++) {
        const uint j = j1 + i;
        if (j >= jend) break;
        const uint key = order_key(scr[row + j]);
        // slot < k by construction; the bound keeps even inconsistent scratch inside the row
        if (key > thr) {
            const uint slot = base + gc + min(ec, take);
            if (slot < k) sel[orow + slot] = j;
            gc++;
        } else if (key == thr) {
            const uint slot = base + gc + ec;
            if (ec < take && slot < k) sel[orow + slot] = j;
            ec++;
        }
    }
}
