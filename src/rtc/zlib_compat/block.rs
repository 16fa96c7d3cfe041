//! Emitting the one final block: zlib's choice between stored, fixed and dynamic
//! Huffman (`_tr_flush_block`), the code-length encoding of the trees, and the bit packer.

use super::tree::{build_tree, Cost, Tree, BIT_LENGTH_TREE, DISTANCE_TREE, LITERAL_TREE};
use super::*;

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
pub(super) fn flush_final_block(
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
pub(super) struct BitWriter {
    pub(super) bytes: Vec<u8>,
    pub(super) acc: u64,
    pub(super) nbits: u32,
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

    pub(super) fn align(&mut self) {
        let nbytes = self.nbits.div_ceil(8) as usize;
        self.bytes
            .extend_from_slice(&self.acc.to_le_bytes()[..nbytes]);
        self.acc = 0;
        self.nbits = 0;
    }
}
