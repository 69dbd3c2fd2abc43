// shaders/indexer.glsl — what shaders/indexer_score.comp and indexer_select.comp share (layout:
// shaders/indexer.h). Needs the push block `p` and the pos[] buffer declared first.

// Visible blocks of query t: min((pos0 + t + 1) / ratio, n_keys) without 32-bit overflow
// (the recorder keeps ratio + n below 2^31).
uint visible_blocks(uint t) {
    const uint p0 = pos[0];
    const uint nb = min(p0 / p.ratio, p.n_keys);
    return min(nb + (p0 % p.ratio + t + 1u) / p.ratio, p.n_keys);
}
