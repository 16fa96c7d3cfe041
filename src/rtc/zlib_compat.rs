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

/// One LZ77 output symbol.
#[derive(Clone, Copy)]
enum Symbol {
    Literal(u8),
    /// `len` in 3..=258, `dist` in 1..=32768.
    Match {
        len: usize,
        dist: usize,
    },
}

/// Code lookup tables derived from the extra-bit tables.
struct Codes {
    /// Match length minus 3 → length code (0..29).
    length_code: [u8; 256],
    base_length: [usize; LENGTH_CODES],
    /// Distance minus 1 → distance code; first 256 entries direct, the rest by `>> 7`.
    dist_code: [u8; 512],
    base_dist: [usize; D_CODES],
}

impl Codes {
    fn new() -> Self {
        let mut length_code = [0u8; 256];
        let mut base_length = [0usize; LENGTH_CODES];
        let mut length = 0usize;
        for code in 0..LENGTH_CODES - 1 {
            base_length[code] = length;
            for _ in 0..(1usize << EXTRA_LBITS[code]) {
                length_code[length] = code as u8;
                length += 1;
            }
        }
        // Length 258 has its own code (28, no extra bits), overriding the last slot of 27.
        length_code[length - 1] = (LENGTH_CODES - 1) as u8;

        let mut dist_code = [0u8; 512];
        let mut base_dist = [0usize; D_CODES];
        let mut dist = 0usize;
        for code in 0..16 {
            base_dist[code] = dist;
            for _ in 0..(1usize << EXTRA_DBITS[code]) {
                dist_code[dist] = code as u8;
                dist += 1;
            }
        }
        dist >>= 7;
        for code in 16..D_CODES {
            base_dist[code] = dist << 7;
            for _ in 0..(1usize << (EXTRA_DBITS[code] - 7)) {
                dist_code[256 + dist] = code as u8;
                dist += 1;
            }
        }
        Codes {
            length_code,
            base_length,
            dist_code,
            base_dist,
        }
    }

    /// Distance code of a distance already reduced by one.
    fn d_code(&self, dist_minus_one: usize) -> usize {
        if dist_minus_one < 256 {
            self.dist_code[dist_minus_one] as usize
        } else {
            self.dist_code[256 + (dist_minus_one >> 7)] as usize
        }
    }
}

/// Compresses `data` (at most [`MAX_INPUT`] bytes) into a zlib stream identical to C
/// zlib's `compress2(level 6)`.
pub(crate) fn compress(data: &[u8]) -> Vec<u8> {
    assert!(
        data.len() <= MAX_INPUT,
        "input too large for the exact zlib emulation"
    );
    let codes = Codes::new();
    let symbols = lz77(data);

    let mut out = BitWriter::default();
    // CMF/FLG: deflate, 32 KiB window, "default compression" level flag, no dictionary.
    out.bytes.extend_from_slice(&[0x78, 0x9c]);
    flush_final_block(&mut out, data, &symbols, &codes);
    out.align();
    out.bytes.extend_from_slice(&adler32(data).to_be_bytes());
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

/// zlib's lazy-evaluation LZ77 pass (`deflate_slow`) over the whole input.
fn lz77(data: &[u8]) -> Vec<Symbol> {
    let n = data.len();
    // zlib reads past the data while extending matches; its window is zero there.
    let mut window = Vec::with_capacity(n + MAX_MATCH + 1);
    window.extend_from_slice(data);
    window.resize(n + MAX_MATCH + 1, 0);

    let mut chains = HashChains::new(&window, n);

    let mut symbols = Vec::with_capacity(n);
    let mut strstart = 0usize;
    let mut match_length = MIN_MATCH - 1;
    let mut match_start = 0usize;
    let mut match_available = false;
    while strstart < n {
        let lookahead = n - strstart;
        let mut hash_head = 0usize;
        if lookahead >= MIN_MATCH {
            hash_head = chains.insert(&window, strstart);
        }
        let prev_length = match_length;
        let prev_match = match_start;
        match_length = MIN_MATCH - 1;

        if hash_head != 0 && prev_length < MAX_LAZY && strstart - hash_head <= MAX_DIST {
            let (len, start) = longest_match(
                &window,
                &chains.prev,
                strstart,
                hash_head,
                prev_length,
                lookahead,
            );
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
            symbols.push(Symbol::Match {
                len: prev_length,
                dist: strstart - 1 - prev_match,
            });
            for _ in 0..prev_length - 2 {
                strstart += 1;
                if strstart <= max_insert {
                    chains.insert(&window, strstart);
                }
            }
            match_available = false;
            match_length = MIN_MATCH - 1;
            strstart += 1;
        } else if match_available {
            symbols.push(Symbol::Literal(window[strstart - 1]));
            strstart += 1;
        } else {
            match_available = true;
            strstart += 1;
        }
    }
    if match_available {
        symbols.push(Symbol::Literal(window[strstart - 1]));
    }
    symbols
}

/// zlib's hash chains: `head[h]` is the latest position whose next three bytes hash to
/// `h`, `prev[p]` the previous position with the same hash as `p`. Position 0 doubles as
/// "none", exactly as in zlib, so it can never serve as a match source.
///
/// The 32 Ki-entry `head` table is reused per thread and only the slots a call touched
/// are cleared afterwards: allocating and zeroing it for every ~200-byte token cost more
/// than the compression itself.
struct HashChains {
    head: Vec<u32>,
    touched: Vec<u16>,
    prev: Vec<usize>,
    ins_h: usize,
}

thread_local! {
    static HEAD_TABLE: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl HashChains {
    fn new(window: &[u8], n: usize) -> Self {
        let mut ins_h = 0;
        if n >= MIN_MATCH {
            ins_h = ((usize::from(window[0]) << HASH_SHIFT) ^ usize::from(window[1])) & HASH_MASK;
        }
        let mut head = HEAD_TABLE.with(|t| std::mem::take(&mut *t.borrow_mut()));
        if head.len() != HASH_SIZE {
            head = vec![0; HASH_SIZE];
        }
        HashChains {
            head,
            touched: Vec::with_capacity(n),
            prev: vec![0; n.max(1)],
            ins_h,
        }
    }

    /// Rolls the hash forward to the string at `pos`, links `pos` into its chain and
    /// returns the previous chain head.
    fn insert(&mut self, window: &[u8], pos: usize) -> usize {
        self.ins_h =
            ((self.ins_h << HASH_SHIFT) ^ usize::from(window[pos + MIN_MATCH - 1])) & HASH_MASK;
        let chain_head = self.head[self.ins_h] as usize;
        self.prev[pos] = chain_head;
        if chain_head == 0 {
            self.touched.push(self.ins_h as u16);
        }
        self.head[self.ins_h] = pos as u32;
        chain_head
    }
}

impl Drop for HashChains {
    fn drop(&mut self) {
        for &h in &self.touched {
            self.head[usize::from(h)] = 0;
        }
        let head = std::mem::take(&mut self.head);
        HEAD_TABLE.with(|t| *t.borrow_mut() = head);
    }
}

/// zlib's `longest_match`: walks the hash chain from `cur_match` looking for a match
/// longer than `prev_length`. Returns the (clamped) best length and, when it improved
/// on `prev_length`, where that match starts.
fn longest_match(
    window: &[u8],
    prev: &[usize],
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
    let scan = &window[strstart..];
    let mut best_len = prev_length;
    let mut best_start = None;
    loop {
        let cand = &window[cur_match..];
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
        cur_match = prev[cur_match];
        chain_length -= 1;
        if cur_match <= limit || chain_length == 0 {
            break;
        }
    }
    (best_len.min(lookahead), best_start)
}

/// A Huffman tree as zlib builds it: code lengths (indexed by node, so with room for
/// zlib's guard entry after the last code) and bit-reversed codes.
struct Tree {
    len: Vec<u16>,
    code: Vec<u16>,
    /// Largest symbol with a non-zero frequency (after zlib's padding to two codes).
    max_code: usize,
}

/// Static properties of one of the three alphabets.
struct TreeKind<'a> {
    elems: usize,
    static_len: Option<&'a [u8]>,
    extra_bits: &'a [u8],
    extra_base: usize,
    max_length: usize,
}

/// Running bit-cost estimates, as zlib keeps them (`opt_len` / `static_len`).
#[derive(Default)]
struct Cost {
    dynamic: i64,
    fixed: i64,
}

/// zlib's `build_tree` + `gen_bitlen` + `gen_codes`.
fn build_tree(mut freq: Vec<u32>, kind: &TreeKind<'_>, cost: &mut Cost) -> Tree {
    let elems = kind.elems;
    freq.resize(HEAP_SIZE, 0);
    let mut len = vec![0u16; HEAP_SIZE];
    let mut dad = vec![0usize; HEAP_SIZE];
    let mut depth = vec![0u8; HEAP_SIZE];
    let mut heap = vec![0usize; HEAP_SIZE];
    let mut heap_len = 0usize;
    let mut heap_max = HEAP_SIZE;
    let mut max_code: isize = -1;

    for (n, &f) in freq.iter().enumerate().take(elems) {
        if f != 0 {
            heap_len += 1;
            heap[heap_len] = n;
            max_code = n as isize;
        }
    }
    // Deflate needs at least two codes; zlib pads with dummy symbols of frequency 1.
    while heap_len < 2 {
        let node = if max_code < 2 {
            max_code += 1;
            max_code as usize
        } else {
            0
        };
        heap_len += 1;
        heap[heap_len] = node;
        freq[node] = 1;
        depth[node] = 0;
        cost.dynamic -= 1;
        if let Some(stree) = kind.static_len {
            cost.fixed -= i64::from(stree[node]);
        }
    }
    let max_code = max_code as usize;

    for k in (1..=heap_len / 2).rev() {
        down_heap(&mut heap, heap_len, &freq, &depth, k);
    }

    let mut node = elems;
    loop {
        let n = heap[1];
        heap[1] = heap[heap_len];
        heap_len -= 1;
        down_heap(&mut heap, heap_len, &freq, &depth, 1);
        let m = heap[1];

        heap_max -= 1;
        heap[heap_max] = n;
        heap_max -= 1;
        heap[heap_max] = m;

        freq[node] = freq[n] + freq[m];
        depth[node] = depth[n].max(depth[m]).wrapping_add(1);
        dad[n] = node;
        dad[m] = node;

        heap[1] = node;
        node += 1;
        down_heap(&mut heap, heap_len, &freq, &depth, 1);
        if heap_len < 2 {
            break;
        }
    }
    heap_max -= 1;
    heap[heap_max] = heap[1];

    // gen_bitlen: code lengths from the tree, clamped to max_length.
    let max_length = kind.max_length;
    let mut bl_count = [0u16; MAX_BITS + 1];
    len[heap[heap_max]] = 0;
    let mut overflow: i32 = 0;
    for &n in &heap[heap_max + 1..HEAP_SIZE] {
        let mut bits = usize::from(len[dad[n]]) + 1;
        if bits > max_length {
            bits = max_length;
            overflow += 1;
        }
        len[n] = bits as u16;
        if n > max_code {
            continue; // internal node
        }
        bl_count[bits] += 1;
        let xbits = if n >= kind.extra_base {
            usize::from(kind.extra_bits[n - kind.extra_base])
        } else {
            0
        };
        let f = i64::from(freq[n]);
        cost.dynamic += f * (bits + xbits) as i64;
        if let Some(stree) = kind.static_len {
            cost.fixed += f * (usize::from(stree[n]) + xbits) as i64;
        }
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
        let mut h = HEAP_SIZE;
        for bits in (1..=max_length).rev() {
            let mut remaining = bl_count[bits];
            while remaining != 0 {
                h -= 1;
                let m = heap[h];
                if m > max_code {
                    continue;
                }
                if usize::from(len[m]) != bits {
                    cost.dynamic += (bits as i64 - i64::from(len[m])) * i64::from(freq[m]);
                    len[m] = bits as u16;
                }
                remaining -= 1;
            }
        }
    }

    let code = canonical_codes(&len[..=max_code], &bl_count);
    Tree {
        len,
        code,
        max_code,
    }
}

/// zlib's heap order: lower frequency first, then lower depth.
fn smaller(freq: &[u32], depth: &[u8], a: usize, b: usize) -> bool {
    freq[a] < freq[b] || (freq[a] == freq[b] && depth[a] <= depth[b])
}

/// zlib's `pqdownheap`: restores the heap property below position `k` (1-based heap).
fn down_heap(heap: &mut [usize], heap_len: usize, freq: &[u32], depth: &[u8], mut k: usize) {
    let v = heap[k];
    let mut j = k << 1;
    while j <= heap_len {
        if j < heap_len && smaller(freq, depth, heap[j + 1], heap[j]) {
            j += 1;
        }
        if smaller(freq, depth, v, heap[j]) {
            break;
        }
        heap[k] = heap[j];
        k = j;
        j <<= 1;
    }
    heap[k] = v;
}

/// zlib's `gen_codes`: canonical, bit-reversed codes from lengths and length counts.
fn canonical_codes(len: &[u16], bl_count: &[u16; MAX_BITS + 1]) -> Vec<u16> {
    let mut next_code = [0u16; MAX_BITS + 1];
    let mut code = 0u16;
    for bits in 1..=MAX_BITS {
        code = (code.wrapping_add(bl_count[bits - 1])) << 1;
        next_code[bits] = code;
    }
    len.iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let c = next_code[usize::from(l)];
            next_code[usize::from(l)] += 1;
            c.reverse_bits() >> (16 - l)
        })
        .collect()
}

/// Code lengths of the fixed literal/length alphabet (all 288 symbols).
fn static_literal_lengths() -> [u8; L_CODES + 2] {
    let mut lens = [0u8; L_CODES + 2];
    for (n, l) in lens.iter_mut().enumerate() {
        *l = match n {
            0..=143 => 8,
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
    }
    lens
}

/// zlib's `scan_tree`: tallies the code-length alphabet needed to send `len[..=max]`.
/// Also plants zlib's guard value after the last code.
fn scan_tree(len: &mut [u16], max_code: usize, bl_freq: &mut [u32]) {
    len[max_code + 1] = 0xffff;
    walk_lengths(len, max_code, |op| match op {
        LengthOp::Plain(l) => bl_freq[usize::from(l)] += 1,
        LengthOp::Repeat(_) => bl_freq[REP_3_6] += 1,
        LengthOp::Zeros3To10(_) => bl_freq[REPZ_3_10] += 1,
        LengthOp::Zeros11To138(_) => bl_freq[REPZ_11_138] += 1,
    });
}

/// One instruction of the run-length coded code-length sequence.
enum LengthOp {
    Plain(u16),
    Repeat(usize),
    Zeros3To10(usize),
    Zeros11To138(usize),
}

/// The run-length walk shared by zlib's `scan_tree` and `send_tree` (same decisions,
/// one tallies, the other emits). `len[max_code + 1]` must hold the guard.
fn walk_lengths(len: &[u16], max_code: usize, mut emit: impl FnMut(LengthOp)) {
    let mut prevlen: i32 = -1;
    let mut nextlen = len[0];
    let mut count = 0usize;
    let (mut max_count, mut min_count) = if nextlen == 0 { (138, 3) } else { (7, 4) };
    for n in 0..=max_code {
        let curlen = nextlen;
        nextlen = len[n + 1];
        count += 1;
        if count < max_count && curlen == nextlen {
            continue;
        } else if count < min_count {
            for _ in 0..count {
                emit(LengthOp::Plain(curlen));
            }
        } else if curlen != 0 {
            if i32::from(curlen) != prevlen {
                emit(LengthOp::Plain(curlen));
                count -= 1;
            }
            emit(LengthOp::Repeat(count));
        } else if count <= 10 {
            emit(LengthOp::Zeros3To10(count));
        } else {
            emit(LengthOp::Zeros11To138(count));
        }
        count = 0;
        prevlen = i32::from(curlen);
        if nextlen == 0 {
            (max_count, min_count) = (138, 3);
        } else if curlen == nextlen {
            (max_count, min_count) = (6, 3);
        } else {
            (max_count, min_count) = (7, 4);
        }
    }
}

/// zlib's `_tr_flush_block` for the final (only) block.
fn flush_final_block(out: &mut BitWriter, data: &[u8], symbols: &[Symbol], codes: &Codes) {
    let mut lfreq = vec![0u32; L_CODES];
    let mut dfreq = vec![0u32; D_CODES];
    lfreq[END_BLOCK] = 1;
    for sym in symbols {
        match *sym {
            Symbol::Literal(c) => lfreq[usize::from(c)] += 1,
            Symbol::Match { len, dist } => {
                lfreq[usize::from(codes.length_code[len - MIN_MATCH]) + LITERALS + 1] += 1;
                dfreq[codes.d_code(dist - 1)] += 1;
            }
        }
    }

    let static_lit = static_literal_lengths();
    let static_dist = [5u8; D_CODES];
    let mut cost = Cost::default();
    let mut ltree = build_tree(
        lfreq,
        &TreeKind {
            elems: L_CODES,
            static_len: Some(&static_lit),
            extra_bits: &EXTRA_LBITS,
            extra_base: LITERALS + 1,
            max_length: MAX_BITS,
        },
        &mut cost,
    );
    let mut dtree = build_tree(
        dfreq,
        &TreeKind {
            elems: D_CODES,
            static_len: Some(&static_dist),
            extra_bits: &EXTRA_DBITS,
            extra_base: 0,
            max_length: MAX_BITS,
        },
        &mut cost,
    );
    let mut bl_freq = vec![0u32; BL_CODES];
    scan_tree(&mut ltree.len, ltree.max_code, &mut bl_freq);
    scan_tree(&mut dtree.len, dtree.max_code, &mut bl_freq);
    let bltree = build_tree(
        bl_freq,
        &TreeKind {
            elems: BL_CODES,
            static_len: None,
            extra_bits: &EXTRA_BLBITS,
            extra_base: 0,
            max_length: MAX_BL_BITS,
        },
        &mut cost,
    );
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
        let fixed_lit_code =
            canonical_codes(&static_lit.map(u16::from), &length_counts(&static_lit));
        let fixed_dist_code: Vec<u16> = (0..D_CODES as u16)
            .map(|d| d.reverse_bits() >> 11)
            .collect();
        let lit = |c: usize| (fixed_lit_code[c], u16::from(static_lit[c]));
        let dist = |c: usize| (fixed_dist_code[c], 5u16);
        compress_block(out, symbols, codes, lit, dist);
    } else {
        out.put_bits((2 << 1) | 1, 3);
        let lcodes = ltree.max_code + 1;
        let dcodes = dtree.max_code + 1;
        out.put_bits((lcodes - 257) as u32, 5);
        out.put_bits((dcodes - 1) as u32, 5);
        out.put_bits((max_blindex + 1 - 4) as u32, 4);
        for &sym in &BL_ORDER[..=max_blindex] {
            out.put_bits(u32::from(bltree.len[sym]), 3);
        }
        send_tree(out, &ltree, &bltree);
        send_tree(out, &dtree, &bltree);
        let lit = |c: usize| (ltree.code[c], ltree.len[c]);
        let dist = |c: usize| (dtree.code[c], dtree.len[c]);
        compress_block(out, symbols, codes, lit, dist);
    }
}

/// zlib's `send_tree`: emits a tree's code lengths with the code-length code.
fn send_tree(out: &mut BitWriter, tree: &Tree, bltree: &Tree) {
    let send =
        |out: &mut BitWriter, c: usize| out.put_bits(u32::from(bltree.code[c]), bltree.len[c]);
    walk_lengths(&tree.len, tree.max_code, |op| match op {
        LengthOp::Plain(l) => send(out, usize::from(l)),
        LengthOp::Repeat(count) => {
            send(out, REP_3_6);
            out.put_bits((count - 3) as u32, 2);
        }
        LengthOp::Zeros3To10(count) => {
            send(out, REPZ_3_10);
            out.put_bits((count - 3) as u32, 3);
        }
        LengthOp::Zeros11To138(count) => {
            send(out, REPZ_11_138);
            out.put_bits((count - 11) as u32, 7);
        }
    });
}

/// How many codes of each length a length table has.
fn length_counts(lens: &[u8]) -> [u16; MAX_BITS + 1] {
    let mut counts = [0u16; MAX_BITS + 1];
    for &l in lens {
        counts[usize::from(l)] += 1;
    }
    counts
}

/// zlib's `compress_block`: emits the symbols with the given code tables.
fn compress_block(
    out: &mut BitWriter,
    symbols: &[Symbol],
    codes: &Codes,
    lit: impl Fn(usize) -> (u16, u16),
    dist: impl Fn(usize) -> (u16, u16),
) {
    let send = |out: &mut BitWriter, (code, len): (u16, u16)| out.put_bits(u32::from(code), len);
    for sym in symbols {
        match *sym {
            Symbol::Literal(c) => send(out, lit(usize::from(c))),
            Symbol::Match { len, dist: d } => {
                let lc = len - MIN_MATCH;
                let code = usize::from(codes.length_code[lc]);
                send(out, lit(code + LITERALS + 1));
                let extra = EXTRA_LBITS[code];
                if extra != 0 {
                    out.put_bits((lc - codes.base_length[code]) as u32, u16::from(extra));
                }
                let d = d - 1;
                let code = codes.d_code(d);
                send(out, dist(code));
                let extra = EXTRA_DBITS[code];
                if extra != 0 {
                    out.put_bits((d - codes.base_dist[code]) as u32, u16::from(extra));
                }
            }
        }
    }
    send(out, lit(END_BLOCK));
}

/// Least-significant-bit-first bit packer, as deflate requires.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    fn put_bits(&mut self, value: u32, len: u16) {
        self.acc |= u64::from(value) << self.nbits;
        self.nbits += u32::from(len);
        while self.nbits >= 8 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.nbits -= 8;
        }
    }

    fn align(&mut self) {
        if self.nbits > 0 {
            self.bytes.push(self.acc as u8);
        }
        self.acc = 0;
        self.nbits = 0;
    }
}
