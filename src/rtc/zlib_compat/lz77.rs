//! The LZ77 pass: zlib's lazy matching (`deflate_slow`) over hash chains, with its
//! level-6 limits, tallying symbol frequencies as zlib's `_tr_tally` does.

use super::*;

/// Symbol frequencies of the block (zlib's `dyn_ltree` / `dyn_dtree` counts) and, one
/// bit per symbol, which of them are non-zero. The tallies also record the symbol in
/// `syms` (zlib's `_tr_tally`).
pub(super) struct Freqs {
    pub(super) lit: [u32; L_CODES],
    pub(super) dist: [u32; D_CODES],
    pub(super) lit_used: [u64; L_CODES.div_ceil(64)],
    pub(super) dist_used: [u64; 1],
}

impl Freqs {
    fn literal(&mut self, syms: &mut Vec<u32>, c: u8) {
        syms.push(u32::from(c));
        let c = usize::from(c);
        self.lit[c] += 1;
        self.lit_used[c / 64] |= 1 << (c % 64);
    }

    fn matched(&mut self, syms: &mut Vec<u32>, len: usize, dist: usize) {
        syms.push(((dist as u32) << 8) | (len - MIN_MATCH) as u32);
        let l = length_code(len - MIN_MATCH).0 + LITERALS + 1;
        self.lit[l] += 1;
        self.lit_used[l / 64] |= 1 << (l % 64);
        let d = dist_code(dist - 1).0;
        self.dist[d] += 1;
        self.dist_used[0] |= 1 << d;
    }
}

/// zlib's lazy-evaluation LZ77 pass (`deflate_slow`) over the whole input, into
/// `scratch.syms` and `freqs`.
pub(super) fn lz77(scratch: &mut Scratch, data: &[u8], freqs: &mut Freqs) {
    let n = data.len();
    let Scratch {
        head,
        generation,
        prev,
        window,
        syms,
        ..
    } = scratch;
    if *generation == 0xffff {
        head.fill(0);
        *generation = 0;
    }
    *generation += 1;
    let tag = *generation << 16;
    let window = &mut window[..n + WINDOW_PAD];
    window[..n].copy_from_slice(data);
    window[n..].fill(0);
    let window = &*window;
    let prev = &mut prev[..n.max(1)];
    syms.clear();
    syms.reserve(n);
    freqs.lit[END_BLOCK] = 1;
    freqs.lit_used[END_BLOCK / 64] |= 1 << (END_BLOCK % 64);

    // Hash chains: `head`/`prev` as in zlib. Position 0 doubles as "none", exactly as in
    // zlib, so it can never serve as a match source.
    let mut ins_h = 0;
    if n >= MIN_MATCH {
        ins_h = ((usize::from(window[0]) << HASH_SHIFT) ^ usize::from(window[1])) & HASH_MASK;
    }
    // Rolls the hash forward to the string at `pos`, links `pos` into its chain and
    // returns the previous chain head.
    let mut insert = |prev: &mut [u16], pos: usize| -> usize {
        ins_h = ((ins_h << HASH_SHIFT) ^ usize::from(window[pos + MIN_MATCH - 1])) & HASH_MASK;
        let entry = head[ins_h];
        let current = entry & !0xffff == tag;
        let chain_head = if current { entry & 0xffff } else { 0 };
        prev[pos] = chain_head as u16;
        head[ins_h] = tag | pos as u32;
        chain_head as usize
    };

    let mut strstart = 0usize;
    let mut match_length = MIN_MATCH - 1;
    let mut match_start = 0usize;
    let mut match_available = false;
    while strstart < n {
        let lookahead = n - strstart;
        let mut hash_head = 0usize;
        if lookahead >= MIN_MATCH {
            hash_head = insert(prev, strstart);
        }
        let prev_length = match_length;
        let prev_match = match_start;
        match_length = MIN_MATCH - 1;

        if hash_head != 0 && prev_length < MAX_LAZY && strstart - hash_head <= MAX_DIST {
            let (len, start) =
                longest_match(window, prev, strstart, hash_head, prev_length, lookahead);
            match_length = len;
            if let Some(start) = start {
                match_start = start;
            }
            if match_length == MIN_MATCH && strstart - match_start > TOO_FAR {
                match_length = MIN_MATCH - 1;
            }
        }

        if prev_length >= MIN_MATCH && match_length <= prev_length {
            // The previous match is at least as good: emit it and skip over it.
            let max_insert = strstart + lookahead - MIN_MATCH;
            let dist = strstart - 1 - prev_match;
            freqs.matched(syms, prev_length, dist);
            for _ in 0..prev_length - 2 {
                strstart += 1;
                if strstart <= max_insert {
                    insert(prev, strstart);
                }
            }
            match_available = false;
            match_length = MIN_MATCH - 1;
            strstart += 1;
        } else if match_available {
            freqs.literal(syms, window[strstart - 1]);
            strstart += 1;
        } else {
            match_available = true;
            strstart += 1;
        }
    }
    if match_available {
        freqs.literal(syms, window[strstart - 1]);
    }
}

/// zlib's `longest_match`: walks the hash chain from `cur_match` looking for a match
/// longer than `prev_length`. Returns the (clamped) best length and, when it improved
/// on `prev_length`, where that match starts.
fn longest_match(
    window: &[u8],
    prev: &[u16],
    strstart: usize,
    mut cur_match: usize,
    prev_length: usize,
    lookahead: usize,
) -> (usize, Option<usize>) {
    let mut chain_length = MAX_CHAIN;
    if prev_length >= GOOD_LENGTH {
        chain_length >>= 2;
    }
    let nice_match = NICE_LENGTH.min(lookahead);
    let limit = strstart.saturating_sub(MAX_DIST);
    // Both slices span MAX_MATCH + 1 bytes, which the window padding guarantees.
    let scan = &window[strstart..=strstart + MAX_MATCH];
    let mut best_len = prev_length;
    let mut best_start = None;
    loop {
        let cand = &window[cur_match..=cur_match + MAX_MATCH];
        // Cheap rejections first; byte 2 needs no check since equal hashes imply it.
        if cand[best_len] == scan[best_len]
            && cand[best_len - 1] == scan[best_len - 1]
            && cand[0] == scan[0]
            && cand[1] == scan[1]
        {
            let mut len = MIN_MATCH;
            while len < MAX_MATCH && cand[len] == scan[len] {
                len += 1;
            }
            if len > best_len {
                best_start = Some(cur_match);
                best_len = len;
                if len >= nice_match {
                    break;
                }
            }
        }
        cur_match = usize::from(prev[cur_match]);
        chain_length -= 1;
        if cur_match <= limit || chain_length == 0 {
            break;
        }
    }
    (best_len.min(lookahead), best_start)
}
