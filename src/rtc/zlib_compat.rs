//! Reproduces, bit for bit, what C zlib's `compress` produces at its default level (6)
//! with the default window (32 KiB) and memory level (8), for inputs small enough to
//! fit one block without the window ever sliding. Other zlib implementations
//! (miniz_oxide, zlib-rs, Go's compress/flate) emit different — equally valid — bytes,
//! so this is what makes our tokens identical to the ones Agora's Python, Java, Node.js
//! and PHP builders produce.
//!
//! The algorithm: lazy-matching LZ77 over a 3-byte rolling hash with hash chains (chain
//! limit 128, cut to 32 once a match of 8 is in hand, lazy evaluation below 16, stop at
//! 128), then one final block that is stored, fixed-Huffman or dynamic-Huffman,
//! whichever zlib's own size estimate picks, with Huffman trees built by zlib's
//! heap-based construction (including its tie-breaking and length-limiting rules).
//!
//! This runs once per issued token, so it avoids per-call allocation and zeroing (large
//! tables live in a reused per-thread [`Scratch`]) and only visits used symbols. None of
//! that changes a decision zlib makes, so the output bytes are unchanged.

use std::cell::Cell;

/// Inputs up to this length are compressed exactly like C zlib; the limit keeps the
/// whole input within one block and inside the first window (no sliding).
pub(crate) const MAX_INPUT: usize = 16_000;

const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
const WINDOW_SIZE: usize = 1 << 15;
const MIN_LOOKAHEAD: usize = MAX_MATCH + MIN_MATCH + 1;
const MAX_DIST: usize = WINDOW_SIZE - MIN_LOOKAHEAD;
const HASH_SIZE: usize = 1 << 15;
const HASH_MASK: usize = HASH_SIZE - 1;
const HASH_SHIFT: u32 = 5;
/// Level 6 tuning: shorten the chain search once a match this long is in hand.
const GOOD_LENGTH: usize = 8;
/// Level 6 tuning: do not look for a better match once one this long is in hand.
const MAX_LAZY: usize = 16;
/// Level 6 tuning: stop searching as soon as a match this long is found.
const NICE_LENGTH: usize = 128;
/// Level 6 tuning: how many chain entries to examine at most.
const MAX_CHAIN: usize = 128;
/// Three-byte matches further back than this are not worth it.
const TOO_FAR: usize = 4096;
/// Zero bytes kept after the input: match extension reads up to `MAX_MATCH` bytes past
/// the current position, and zlib's window is zero there.
const WINDOW_PAD: usize = MAX_MATCH + 1;

const LITERALS: usize = 256;
const END_BLOCK: usize = 256;
const LENGTH_CODES: usize = 29;
const L_CODES: usize = LITERALS + 1 + LENGTH_CODES;
const D_CODES: usize = 30;
const BL_CODES: usize = 19;
const MAX_BITS: usize = 15;
const MAX_BL_BITS: usize = 7;
const HEAP_SIZE: usize = 2 * L_CODES + 1;
const REP_3_6: usize = 16;
const REPZ_3_10: usize = 17;
const REPZ_11_138: usize = 18;

/// Extra bits of each length code (RFC 1951, 3.2.5).
const EXTRA_LBITS: [u8; LENGTH_CODES] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Extra bits of each distance code (RFC 1951, 3.2.5).
const EXTRA_DBITS: [u8; D_CODES] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// Extra bits of the code-length alphabet (RFC 1951, 3.2.7).
const EXTRA_BLBITS: [u8; BL_CODES] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7];
/// Transmission order of the code-length code lengths (RFC 1951, 3.2.7).
const BL_ORDER: [usize; BL_CODES] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Length code (0..29) of a match length minus 3 (zlib's `_length_code`), and the first
/// length minus 3 of that code (its `base_length`, but 255 for code 28, whose extra bits
/// zlib never sends). Codes 0..=7 stand for one length each; above, every 4 codes cover a
/// power of two, so the top two bits below the leading one pick the code (RFC 1951 3.2.5).
fn length_code(lc: usize) -> (usize, usize) {
    if lc < 8 {
        (lc, lc)
    } else if lc == 255 {
        (LENGTH_CODES - 1, 255)
    } else {
        let top = lc.ilog2() as usize;
        let code = 4 * (top - 1) + ((lc >> (top - 2)) & 3);
        (code, (4 + (code & 3)) << (top - 2))
    }
}

/// Distance code (0..30) of a distance minus 1 (zlib's `d_code`), and the first distance
/// minus 1 of that code: codes 0..=3 stand for one distance each; above, every 2 codes
/// cover a power of two (RFC 1951 3.2.5).
fn dist_code(d: usize) -> (usize, usize) {
    if d < 4 {
        (d, d)
    } else {
        let top = d.ilog2() as usize;
        let code = 2 * top + ((d >> (top - 1)) & 1);
        (code, (2 + (code & 1)) << (top - 1))
    }
}

/// Code lengths of the fixed literal/length alphabet (all 288 symbols, RFC 1951 3.2.6):
/// 8, but 9 for 144..=255 and 7 for 256..=279.
const FIXED_LIT_LEN: [u8; L_CODES + 2] = {
    let mut lens = [8u8; L_CODES + 2];
    let mut n = 144;
    while n < 280 {
        lens[n] = if n < 256 { 9 } else { 7 };
        n += 1;
    }
    lens
};
/// Bit-reversed fixed literal/length codes (zlib's `static_ltree` codes).
const FIXED_LIT_CODE: [u16; L_CODES + 2] = {
    let mut bl_count = [0u16; MAX_BITS + 1];
    let mut n = 0;
    while n < L_CODES + 2 {
        bl_count[FIXED_LIT_LEN[n] as usize] += 1;
        n += 1;
    }
    canonical_codes(&FIXED_LIT_LEN, L_CODES + 2, &bl_count)
};
/// Code lengths of the fixed distance alphabet: all 5.
const FIXED_DIST_LEN: [u8; D_CODES] = [5; D_CODES];
/// Bit-reversed fixed distance codes.
const FIXED_DIST_CODE: [u16; D_CODES] = {
    let mut codes = [0u16; D_CODES];
    let mut d = 0;
    while d < D_CODES {
        codes[d] = (d as u16).reverse_bits() >> 11;
        d += 1;
    }
    codes
};

/// Per-thread working memory, reused so a ~200-byte token does not pay for allocating
/// and zeroing tables sized for 16 000 bytes. Stale data from earlier calls is harmless:
/// `head` entries carry the generation that wrote them, `prev[p]` is written (when `p`
/// is inserted) before it is read, `window` is rewritten up to its padding, `syms` is
/// cleared, and see [`TreeScratch`].
struct Scratch {
    /// `head[h]`: latest position whose next three bytes hash to `h`, tagged with the
    /// call that wrote it as `generation << 16 | position`. Entries of earlier calls
    /// read as empty, which spares clearing the table after every call.
    head: Box<[u32; HASH_SIZE]>,
    /// Tag of the current call, `1..=0xffff` (0 marks never-written entries).
    generation: u32,
    /// `prev[p]`: the previous position with the same hash as `p` (0 = end of chain).
    prev: Box<[u16; MAX_INPUT]>,
    /// The input followed by `WINDOW_PAD` zero bytes.
    window: Box<[u8; MAX_INPUT + WINDOW_PAD]>,
    /// LZ77 output, one entry per symbol: a literal byte (`< 256`), or
    /// `dist << 8 | (len - 3)` for a match (`dist >= 1`).
    syms: Vec<u32>,
    tree: TreeScratch,
}

impl Scratch {
    fn new() -> Box<Self> {
        Box::new(Scratch {
            head: vec![0; HASH_SIZE].try_into().expect("HASH_SIZE entries"),
            generation: 0,
            prev: vec![0; MAX_INPUT].try_into().expect("MAX_INPUT entries"),
            window: vec![0; MAX_INPUT + WINDOW_PAD].try_into().expect("padded"),
            syms: Vec::new(),
            tree: TreeScratch {
                heap: [0; HEAP_ARRAY],
                order: [0; HEAP_SIZE],
                dad: [0; HEAP_SIZE],
            },
        })
    }
}

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

/// Compresses `data` (at most [`MAX_INPUT`] bytes) into a zlib stream identical to C
/// zlib's `compress2(level 6)`.
pub(crate) fn compress(data: &[u8]) -> Vec<u8> {
    assert!(
        data.len() <= MAX_INPUT,
        "input too large for the exact zlib emulation"
    );
    // The scratch is taken out of the thread-local for the call (so a reentrant call,
    // were there one, would get its own) and put back afterwards.
    let mut scratch = SCRATCH
        .try_with(Cell::take)
        .ok()
        .flatten()
        .unwrap_or_else(Scratch::new);
    let mut freqs = Freqs {
        lit: [0; L_CODES],
        dist: [0; D_CODES],
        lit_used: [0; L_CODES.div_ceil(64)],
        dist_used: [0; 1],
    };
    lz77(&mut scratch, data, &mut freqs);

    // The stream is at most `len + 11` bytes (header, stored block, checksum): zlib only
    // picks another block kind when its exact size estimate is smaller.
    let mut out = BitWriter {
        bytes: Vec::with_capacity(data.len() + 16),
        acc: 0,
        nbits: 0,
    };
    // CMF/FLG: deflate, 32 KiB window, "default compression" level flag, no dictionary.
    out.bytes.extend_from_slice(&[0x78, 0x9c]);
    let Scratch { syms, tree, .. } = &mut *scratch;
    flush_final_block(&mut out, data, syms, tree, &mut freqs);
    out.align();
    out.bytes.extend_from_slice(&adler32(data).to_be_bytes());
    // If the thread-local is gone (thread teardown), the scratch is just dropped.
    let _ = SCRATCH.try_with(|cell| cell.set(Some(scratch)));
    out.bytes
}

/// Adler-32 checksum (RFC 1950).
pub(crate) fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5_552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Symbol frequencies of the block (zlib's `dyn_ltree` / `dyn_dtree` counts) and, one
/// bit per symbol, which of them are non-zero. The tallies also record the symbol in
/// `syms` (zlib's `_tr_tally`).
struct Freqs {
    lit: [u32; L_CODES],
    dist: [u32; D_CODES],
    lit_used: [u64; L_CODES.div_ceil(64)],
    dist_used: [u64; 1],
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
fn lz77(scratch: &mut Scratch, data: &[u8], freqs: &mut Freqs) {
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

/// A Huffman tree as zlib builds it: code lengths per symbol. Codes are derived on
/// demand ([`Tree::codes`]).
struct Tree {
    len: [u8; L_CODES],
    /// One bit per leaf symbol (the symbols with a non-zero length).
    leaves: [u64; L_CODES.div_ceil(64)],
    /// Code count per length, as `gen_bitlen` left it.
    bl_count: [u16; MAX_BITS + 1],
    /// Largest symbol with a non-zero frequency (after zlib's padding to two codes).
    max_code: usize,
}

impl Tree {
    /// zlib's `gen_codes`: the canonical, bit-reversed codes (only needed when the tree
    /// is actually sent).
    fn codes(&self) -> [u16; L_CODES] {
        canonical_codes(&self.len, self.max_code + 1, &self.bl_count)
    }
}

/// Static properties of one of the three alphabets.
struct TreeKind {
    /// Code lengths in the fixed code, for zlib's fixed-block estimate.
    static_len: Option<&'static [u8]>,
    /// Extra bits sent after each symbol, one entry per symbol.
    extra_bits: &'static [u8],
    max_length: usize,
}

const LITERAL_TREE: TreeKind = TreeKind {
    static_len: Some(&FIXED_LIT_LEN),
    extra_bits: &L_EXTRA_BITS,
    max_length: MAX_BITS,
};
const DISTANCE_TREE: TreeKind = TreeKind {
    static_len: Some(&FIXED_DIST_LEN),
    extra_bits: &EXTRA_DBITS,
    max_length: MAX_BITS,
};
const BIT_LENGTH_TREE: TreeKind = TreeKind {
    static_len: None,
    extra_bits: &EXTRA_BLBITS,
    max_length: MAX_BL_BITS,
};

/// Extra bits per literal/length symbol (0 for literals and end-of-block).
const L_EXTRA_BITS: [u8; L_CODES] = {
    let mut xbits = [0u8; L_CODES];
    let mut code = 0;
    while code < LENGTH_CODES {
        xbits[LITERALS + 1 + code] = EXTRA_LBITS[code];
        code += 1;
    }
    xbits
};

/// Running bit-cost estimates, as zlib keeps them (`opt_len` / `static_len`).
#[derive(Default)]
struct Cost {
    dynamic: i64,
    fixed: i64,
}

/// Working arrays of the tree construction, reused across trees and calls without
/// clearing: every slot is written before it is read within one `build_tree`.
struct TreeScratch {
    /// `heap[1..=heap_len]` is zlib's priority queue (`heap[0]` unused) of
    /// [`heap_entry`] values; `heap[heap_len + 1]` always holds [`SENTINEL`].
    heap: [u64; HEAP_ARRAY],
    /// zlib keeps the nodes leaving the queue in `heap[heap_max..HEAP_SIZE]`, filled
    /// downwards; `order[order_start..]` holds the same sequence.
    order: [u16; HEAP_SIZE],
    /// Parent of each node.
    dad: [u16; HEAP_SIZE],
}

/// Heap entry: zlib's ordering key (frequency, then depth) above the node number, so
/// comparing needs no indirect lookups. Frequencies stay below 2^15 (at most 16 002
/// symbols per block) and depths are zlib's `uch`, so the fields never overlap.
fn heap_entry(freq: u32, depth: u8, node: usize) -> u64 {
    (u64::from(freq) << 24) | (u64::from(depth) << 16) | node as u64
}

/// Room for the 1-based heap of up to `L_CODES` entries plus the sentinel after it.
const HEAP_ARRAY: usize = L_CODES + 2;

/// Ranks after every real entry, so a missing right child is never preferred.
const SENTINEL: u64 = u64::MAX;

/// zlib's `smaller(a, b)`: lower frequency first, then lower-or-equal depth; the same
/// as `a >> 16 <= b >> 16`.
fn smaller(a: u64, b: u64) -> bool {
    a <= b | 0xffff
}

fn entry_node(entry: u64) -> usize {
    usize::from(entry as u16)
}

/// zlib's `build_tree` + `gen_bitlen` (codes come later from [`Tree::codes`]).
/// `freq` has one entry per symbol, `used` one bit per symbol with a non-zero frequency;
/// zlib's dummy codes get frequency 1 written into `freq`.
fn build_tree(
    freq: &mut [u32],
    used: &[u64],
    kind: &TreeKind,
    cost: &mut Cost,
    scratch: &mut TreeScratch,
) -> Tree {
    let elems = freq.len();
    let TreeScratch { heap, order, dad } = scratch;
    // The queued symbols (including zlib's dummies), ascending, and the code length of
    // each internal node (indexed by node minus `elems`).
    let (mut leaves, mut node_len) = ([0u16; L_CODES], [0u8; L_CODES]);
    let mut heap_len = 0usize;
    let mut max_code: isize = -1;

    // Queue the used symbols in ascending order, as zlib does.
    for (base, &used) in used.iter().enumerate() {
        let mut used = used;
        while used != 0 {
            let n = base * 64 + used.trailing_zeros() as usize;
            used &= used - 1;
            heap_len += 1;
            heap[heap_len] = heap_entry(freq[n], 0, n);
            max_code = n as isize;
        }
    }
    // Deflate needs at least two codes; zlib pads with dummy symbols of frequency 1.
    let mut dummies = 0;
    while heap_len < 2 {
        let node = if max_code < 2 {
            max_code += 1;
            max_code as usize
        } else {
            0
        };
        heap_len += 1;
        heap[heap_len] = heap_entry(1, 0, node);
        freq[node] = 1;
        dummies += 1;
        if let Some(stree) = kind.static_len {
            cost.fixed -= i64::from(stree[node]);
        }
    }
    let max_code = max_code as usize;
    let leaf_count = heap_len;
    for (leaf, &entry) in leaves.iter_mut().zip(&heap[1..=heap_len]) {
        *leaf = entry_node(entry) as u16;
    }
    heap[heap_len + 1] = SENTINEL;

    let mut root = heap[1];
    for k in (1..=heap_len / 2).rev() {
        root = down_heap(heap, heap_len, k, heap[k]);
    }

    // zlib's loop, with the root kept in a register: pop it (the last entry moves to
    // the root and sinks), read the new root, replace it with the merged node and sink.
    let mut order_start = HEAP_SIZE;
    let mut node = elems;
    loop {
        let n = root;
        let last = heap[heap_len];
        heap[heap_len] = SENTINEL;
        heap_len -= 1;
        let m = down_heap(heap, heap_len, 1, last);

        order_start -= 2;
        order[order_start + 1] = entry_node(n) as u16;
        order[order_start] = entry_node(m) as u16;

        let freq_sum = (n >> 24) as u32 + (m >> 24) as u32;
        let depth = ((n >> 16) as u8).max((m >> 16) as u8).wrapping_add(1);
        dad[entry_node(n)] = node as u16;
        dad[entry_node(m)] = node as u16;

        root = down_heap(heap, heap_len, 1, heap_entry(freq_sum, depth, node));
        node += 1;
        if heap_len < 2 {
            break;
        }
    }
    order_start -= 1;
    order[order_start] = entry_node(root) as u16;

    // gen_bitlen: every node's length is its parent's plus one, clamped to max_length,
    // with each clamp counted as overflow. zlib walks its heap tail (parents first);
    // any parents-first order gives the same lengths and counts. Here: the internal
    // nodes newest first (a parent is always newer than its children, the root is the
    // newest, with length 0), then the leaves, which no longer depend on each other.
    let max_length = kind.max_length;
    let root = node - 1;
    let mut overflow: i32 = 0;
    node_len[root - elems] = 0;
    for n in (elems..root).rev() {
        let bits = node_len[usize::from(dad[n]) - elems] + 1;
        overflow += i32::from(usize::from(bits) > max_length);
        node_len[n - elems] = bits.min(max_length as u8);
    }
    let leaves = &leaves[..leaf_count];
    let mut len = [0u8; L_CODES];
    let mut leaf_bits = [0u64; L_CODES.div_ceil(64)];
    let mut bl_count = [0u16; MAX_BITS + 1];
    for &n in leaves {
        let n = usize::from(n);
        let bits = node_len[usize::from(dad[n]) - elems] + 1;
        overflow += i32::from(usize::from(bits) > max_length);
        let bits = bits.min(max_length as u8);
        len[n] = bits;
        leaf_bits[n / 64] |= 1 << (n % 64);
        bl_count[usize::from(bits)] += 1;
    }
    if overflow > 0 {
        loop {
            let mut bits = max_length - 1;
            while bl_count[bits] == 0 {
                bits -= 1;
            }
            bl_count[bits] -= 1;
            bl_count[bits + 1] += 2;
            bl_count[max_length] -= 1;
            overflow -= 2;
            if overflow <= 0 {
                break;
            }
        }
        // Hand the corrected lengths out again, walking zlib's heap tail from its end.
        let order = &order[order_start..];
        let mut h = order.len();
        for bits in (1..=max_length).rev() {
            let mut remaining = bl_count[bits];
            while remaining != 0 {
                h -= 1;
                let m = usize::from(order[h]);
                if m > max_code {
                    continue;
                }
                len[m] = bits as u8;
                remaining -= 1;
            }
        }
    }

    // zlib accumulates both estimates leaf by leaf (and corrects `opt_len` whenever the
    // overflow pass changes a length); the totals are these sums over the final
    // lengths, where each dummy's frequency 1 was cancelled in advance.
    let (mut dynamic, mut fixed) = (0i64, 0i64);
    for &n in leaves {
        let n = usize::from(n);
        let f = i64::from(freq[n]);
        let xbits = i64::from(kind.extra_bits[n]);
        dynamic += f * (i64::from(len[n]) + xbits);
        if let Some(stree) = kind.static_len {
            fixed += f * (i64::from(stree[n]) + xbits);
        }
    }
    cost.dynamic += dynamic - dummies;
    cost.fixed += fixed;
    Tree {
        len,
        leaves: leaf_bits,
        bl_count,
        max_code,
    }
}

/// zlib's `pqdownheap`: sinks `v` from position `start` of the 1-based heap
/// `heap[1..=heap_len]` (whose slot `start` it replaces) and returns what ends up at
/// `start`. [`SENTINEL`] at `heap_len + 1` lets the smaller-child choice go without a
/// bounds test, as a conditional move.
fn down_heap(heap: &mut [u64; HEAP_ARRAY], heap_len: usize, start: usize, v: u64) -> u64 {
    let mut k = start;
    let mut j = k << 1;
    let mut top = v;
    while j <= heap_len {
        let (left, right) = (heap[j], heap[j + 1]);
        let (child, at) = if smaller(right, left) {
            (right, j + 1)
        } else {
            (left, j)
        };
        if smaller(v, child) {
            break;
        }
        heap[k] = child;
        if k == start {
            top = child;
        }
        k = at;
        j = at << 1;
    }
    heap[k] = v;
    top
}

/// zlib's `gen_codes`: canonical, bit-reversed codes for the first `count` lengths
/// (later entries get code 0) from the length counts.
const fn canonical_codes<const N: usize>(
    len: &[u8; N],
    count: usize,
    bl_count: &[u16; MAX_BITS + 1],
) -> [u16; N] {
    let mut next_code = [0u16; MAX_BITS + 1];
    let mut code = 0u16;
    let mut bits = 1;
    while bits <= MAX_BITS {
        code = (code.wrapping_add(bl_count[bits - 1])) << 1;
        next_code[bits] = code;
        bits += 1;
    }
    let mut codes = [0u16; N];
    let mut n = 0;
    while n < count {
        let l = len[n] as usize;
        if l != 0 {
            codes[n] = next_code[l].reverse_bits() >> (16 - l);
            next_code[l] += 1;
        }
        n += 1;
    }
    codes
}

/// Calls `f(length, count)` for each run of `tree.len[..=max_code]`, in order (a run is
/// a maximal stretch of equal lengths). Only the leaves are visited: the zero runs are
/// the gaps between them. Zero counts are passed along and mean nothing.
fn for_each_run(tree: &Tree, mut f: impl FnMut(u8, usize)) {
    let mut next = 0; // first symbol not yet part of a run
    let (mut run_len, mut run_value) = (0, 0);
    for (base, &word) in tree.leaves.iter().enumerate() {
        let mut word = word;
        while word != 0 {
            let n = base * 64 + word.trailing_zeros() as usize;
            word &= word - 1;
            if n != next || tree.len[n] != run_value {
                f(run_value, run_len);
                f(0, n - next);
                (run_len, run_value) = (0, tree.len[n]);
            }
            run_len += 1;
            next = n + 1;
        }
    }
    // The last leaf is `max_code`, so nothing follows the final run.
    f(run_value, run_len);
}

/// The code-length instructions zlib's `scan_tree` / `send_tree` produce for one run of
/// `count` lengths `value`, as `emit(symbol, extra value, extra bits)`. zlib decides
/// entry by entry; per run its rules come down to:
/// - zeros go in chunks of 138 (code 18); the rest as code 18 (11..=138), code 17
///   (3..=10) or that many plain zeros;
/// - other lengths: up to 3 are sent plainly; otherwise the first is sent plainly and
///   repeated with code 16 for the rest of the first 7, and any further ones go in
///   chunks of 6 (code 16), the last chunk as code 16 (3..=6) or plainly.
fn run_ops(value: u8, count: usize, emit: &mut impl FnMut(usize, usize, u32)) {
    let plain = usize::from(value);
    if value == 0 {
        for _ in 0..count / 138 {
            emit(REPZ_11_138, 138 - 11, 7);
        }
        match count % 138 {
            rest @ 11.. => emit(REPZ_11_138, rest - 11, 7),
            rest @ 3..=10 => emit(REPZ_3_10, rest - 3, 3),
            rest => (0..rest).for_each(|_| emit(0, 0, 0)),
        }
    } else if count < 4 {
        (0..count).for_each(|_| emit(plain, 0, 0));
    } else {
        emit(plain, 0, 0);
        emit(REP_3_6, count.min(7) - 4, 2);
        let further = count.saturating_sub(7);
        for _ in 0..further / 6 {
            emit(REP_3_6, 6 - 3, 2);
        }
        match further % 6 {
            rest @ 3.. => emit(REP_3_6, rest - 3, 2),
            rest => (0..rest).for_each(|_| emit(plain, 0, 0)),
        }
    }
}

/// zlib's `scan_tree`: tallies the code-length codes needed to send the tree's lengths.
fn scan_tree(tree: &Tree, bl_freq: &mut [u32; BL_CODES]) {
    for_each_run(tree, |value, count| {
        run_ops(value, count, &mut |symbol, _, _| bl_freq[symbol] += 1);
    });
}

/// zlib's `send_tree`: emits the tree's lengths with the code-length code.
fn send_tree(out: &mut BitWriter, tree: &Tree, bl_len: &[u8], bl_code: &[u16]) {
    for_each_run(tree, |value, count| {
        run_ops(value, count, &mut |symbol, extra, extra_bits| {
            let len = u32::from(bl_len[symbol]);
            let code = u32::from(bl_code[symbol]) | ((extra as u32) << len);
            out.put_bits(code, len + extra_bits);
        });
    });
}

/// zlib's `_tr_flush_block` for the final (only) block.
fn flush_final_block(
    out: &mut BitWriter,
    data: &[u8],
    syms: &[u32],
    scratch: &mut TreeScratch,
    freqs: &mut Freqs,
) {
    let mut cost = Cost::default();
    let (lit, lit_used) = (&mut freqs.lit, &freqs.lit_used);
    let ltree = build_tree(lit, lit_used, &LITERAL_TREE, &mut cost, scratch);
    let (dist, dist_used) = (&mut freqs.dist, &freqs.dist_used);
    let dtree = build_tree(dist, dist_used, &DISTANCE_TREE, &mut cost, scratch);
    let mut bl_freq = [0u32; BL_CODES];
    scan_tree(&ltree, &mut bl_freq);
    scan_tree(&dtree, &mut bl_freq);
    let bl_used = [(0..BL_CODES).fold(0, |used, n| used | u64::from(bl_freq[n] != 0) << n)];
    let bltree = build_tree(&mut bl_freq, &bl_used, &BIT_LENGTH_TREE, &mut cost, scratch);
    let mut max_blindex = BL_CODES - 1;
    while max_blindex >= 3 && bltree.len[BL_ORDER[max_blindex]] == 0 {
        max_blindex -= 1;
    }
    cost.dynamic += 3 * (max_blindex as i64 + 1) + 5 + 5 + 4;

    let mut opt_lenb = (cost.dynamic + 3 + 7) >> 3;
    let static_lenb = (cost.fixed + 3 + 7) >> 3;
    if static_lenb <= opt_lenb {
        opt_lenb = static_lenb;
    }

    if data.len() as i64 + 4 <= opt_lenb {
        // Stored block: header bits, byte-align, LEN, NLEN, raw bytes.
        out.put_bits(1, 3);
        out.align();
        let len = data.len() as u16;
        out.bytes.extend_from_slice(&len.to_le_bytes());
        out.bytes.extend_from_slice(&(!len).to_le_bytes());
        out.bytes.extend_from_slice(data);
    } else if static_lenb == opt_lenb {
        out.put_bits((1 << 1) | 1, 3);
        let (lit, dist) = (
            (&FIXED_LIT_CODE[..], &FIXED_LIT_LEN[..]),
            (&FIXED_DIST_CODE[..], &FIXED_DIST_LEN[..]),
        );
        compress_block(out, syms, lit, dist);
    } else {
        let (lcode, dcode) = (ltree.codes(), dtree.codes());
        out.put_bits((2 << 1) | 1, 3);
        out.put_bits((ltree.max_code + 1 - 257) as u32, 5);
        out.put_bits(dtree.max_code as u32, 5);
        out.put_bits((max_blindex + 1 - 4) as u32, 4);
        for &sym in &BL_ORDER[..=max_blindex] {
            out.put_bits(u32::from(bltree.len[sym]), 3);
        }
        let blcode = bltree.codes();
        send_tree(out, &ltree, &bltree.len, &blcode);
        send_tree(out, &dtree, &bltree.len, &blcode);
        let (lit, dist) = ((&lcode[..], &ltree.len[..]), (&dcode[..], &dtree.len[..]));
        compress_block(out, syms, lit, dist);
    }
}

/// zlib's `compress_block`: emits the symbols with the given (code, length) tables of
/// the literal/length and distance alphabets. Each Huffman code goes out together with
/// its extra bits (code first, as deflate orders them).
fn compress_block(
    out: &mut BitWriter,
    syms: &[u32],
    (lit_code, lit_len): (&[u16], &[u8]),
    (dist_codes, dist_len): (&[u16], &[u8]),
) {
    for &sym in syms {
        let dist = (sym >> 8) as usize;
        if dist == 0 {
            let c = (sym & 0xff) as usize;
            out.put_bits(u32::from(lit_code[c]), u32::from(lit_len[c]));
        } else {
            let lc = (sym & 0xff) as usize;
            let (code, base) = length_code(lc);
            let (huff, len) = (lit_code[code + LITERALS + 1], lit_len[code + LITERALS + 1]);
            let extra = (lc - base) as u32;
            out.put_bits(
                u32::from(huff) | (extra << len),
                u32::from(len) + u32::from(EXTRA_LBITS[code]),
            );
            let (code, base) = dist_code(dist - 1);
            let (huff, len) = (dist_codes[code], dist_len[code]);
            let extra = (dist - 1 - base) as u32;
            out.put_bits(
                u32::from(huff) | (extra << len),
                u32::from(len) + u32::from(EXTRA_DBITS[code]),
            );
        }
    }
    out.put_bits(
        u32::from(lit_code[END_BLOCK]),
        u32::from(lit_len[END_BLOCK]),
    );
}

/// Least-significant-bit-first bit packer, as deflate requires. Between calls fewer
/// than 32 bits are pending in `acc`.
struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    /// Appends the low `len` bits of `value` (`len <= 32`; higher bits must be zero).
    fn put_bits(&mut self, value: u32, len: u32) {
        self.acc |= u64::from(value) << self.nbits;
        self.nbits += len;
        if self.nbits >= 32 {
            self.bytes
                .extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.nbits -= 32;
        }
    }

    fn align(&mut self) {
        let nbytes = self.nbits.div_ceil(8) as usize;
        self.bytes
            .extend_from_slice(&self.acc.to_le_bytes()[..nbytes]);
        self.acc = 0;
        self.nbits = 0;
    }
}
