//! The local durable outbox of a node without Redis: an append-only file of records that
//! survives restarts, replayed to the persistence writer after a crash.
//!
//! Layout in the directory: segment files `outbox-<first id>.log` holding length-prefixed,
//! CRC-checked records, and `committed`, the highest id below which every record has been
//! written to PostgreSQL. A record is written to its segment (one `write`) before the
//! append that made it returns, so a killed process loses nothing; the page cache is
//! flushed to disk every `persist.local_fsync_interval` ([`FileOutbox::sync`]). A torn
//! record at the end of the last segment (a crash mid-write) is cut off when opening.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use super::{OutboxEntry, OutboxStats, OutboxTag};

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Header of a record: body length (u32 LE) and CRC-32 of the body (u32 LE).
const HEADER: usize = 8;
/// Largest record body accepted when reading back (a corrupt length must not allocate).
const MAX_BODY: usize = 16 << 20;

pub struct FileOutbox {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// A second handle on the current segment, so fsync runs without holding `inner`.
    sync_file: Mutex<Option<File>>,
}

struct Inner {
    file: File,
    segment_bytes: u64,
    /// First ids of the segments on disk, oldest first (the last one is open).
    segments: VecDeque<u64>,
    next_id: u64,
    /// Records not yet confirmed, by id.
    pending: BTreeMap<u64, OutboxEntry>,
    /// Every pending record with an id up to this one has been handed to a writer.
    handed: u64,
    committed: u64,
    dirty: bool,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("outbox-{first:020}.log"))
}

fn encode(id: u64, tag_kind: &str, scope: &str, seq: u64, added_ms: u64, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + tag_kind.len() + scope.len() + data.len());
    body.extend_from_slice(&id.to_le_bytes());
    body.extend_from_slice(&added_ms.to_le_bytes());
    body.extend_from_slice(&seq.to_le_bytes());
    body.push(tag_kind.len() as u8);
    body.extend_from_slice(tag_kind.as_bytes());
    body.extend_from_slice(&(scope.len() as u16).to_le_bytes());
    body.extend_from_slice(scope.as_bytes());
    body.extend_from_slice(data);
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode(body: &[u8]) -> Option<(u64, OutboxEntry)> {
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
    };
    let id = u64_at(0)?;
    let added_ms = u64_at(8)?;
    let seq = u64_at(16)?;
    let klen = *body.get(24)? as usize;
    let kind = std::str::from_utf8(body.get(25..25 + klen)?).ok()?;
    let at = 25 + klen;
    let slen = u16::from_le_bytes(body.get(at..at + 2)?.try_into().ok()?) as usize;
    let scope = std::str::from_utf8(body.get(at + 2..at + 2 + slen)?).ok()?;
    let data = body.get(at + 2 + slen..)?;
    Some((
        id,
        OutboxEntry {
            id: id.to_string(),
            kind: kind.to_string(),
            scope: scope.to_string(),
            seq,
            data: Bytes::copy_from_slice(data),
            added_ms,
        },
    ))
}

/// Reads a segment's records; returns them and the length of its intact prefix.
fn read_segment(path: &Path) -> io::Result<(Vec<(u64, OutboxEntry)>, u64)> {
    let mut raw = Vec::new();
    File::open(path)?.read_to_end(&mut raw)?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + HEADER <= raw.len() {
        let len = u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(raw[at + 4..at + 8].try_into().unwrap());
        if len > MAX_BODY || at + HEADER + len > raw.len() {
            break;
        }
        let body = &raw[at + HEADER..at + HEADER + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        match decode(body) {
            Some(r) => out.push(r),
            None => break,
        }
        at += HEADER + len;
    }
    Ok((out, at as u64))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl FileOutbox {
    /// Opens (or creates) the outbox in `dir` and loads every record not yet committed.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let committed = match fs::read_to_string(dir.join("committed")) {
            Ok(s) => s.trim().parse::<u64>().map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("committed: {e}"))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let mut segments: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("outbox-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        segments.sort_unstable();
        let mut pending = BTreeMap::new();
        let mut max_id = committed;
        let mut last_len = 0;
        for (i, first) in segments.iter().enumerate() {
            let path = segment_path(dir, *first);
            let (records, intact) = read_segment(&path)?;
            for (id, e) in records {
                max_id = max_id.max(id);
                if id > committed {
                    pending.insert(id, e);
                }
            }
            if i + 1 == segments.len() {
                let len = fs::metadata(&path)?.len();
                if intact < len {
                    tracing::warn!(
                        segment = %path.display(),
                        cut = len - intact,
                        "outbox: cutting a torn record off the end"
                    );
                    OpenOptions::new()
                        .write(true)
                        .open(&path)?
                        .set_len(intact)?;
                }
                last_len = intact;
            }
        }
        if segments.is_empty() {
            segments.push(max_id + 1);
        }
        let current = *segments.last().unwrap();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, current))?;
        let sync = file.try_clone()?;
        if !pending.is_empty() {
            tracing::info!(
                records = pending.len(),
                dir = %dir.display(),
                "outbox: replaying records not yet written to PostgreSQL"
            );
        }
        let me = Self {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                file,
                segment_bytes: last_len,
                segments: segments.into(),
                next_id: max_id + 1,
                pending,
                handed: committed,
                committed,
                dirty: false,
            }),
            sync_file: Mutex::new(Some(sync)),
        };
        me.drop_committed_segments(&mut me.inner.lock().unwrap());
        Ok(me)
    }

    /// Appends a record; it is in the file when this returns.
    pub fn append(&self, tag: &OutboxTag, seq: u64, data: &[u8]) -> io::Result<()> {
        let mut g = self.inner.lock().unwrap();
        self.append_locked(&mut g, tag, seq, data)
    }

    fn append_locked(
        &self,
        g: &mut Inner,
        tag: &OutboxTag,
        seq: u64,
        data: &[u8],
    ) -> io::Result<()> {
        if g.segment_bytes >= SEGMENT_BYTES {
            self.rotate(g)?;
        }
        let id = g.next_id;
        let added_ms = now_ms();
        let rec = encode(id, tag.kind, &tag.scope, seq, added_ms, data);
        g.file.write_all(&rec)?;
        g.segment_bytes += rec.len() as u64;
        g.next_id += 1;
        g.dirty = true;
        g.pending.insert(
            id,
            OutboxEntry {
                id: id.to_string(),
                kind: tag.kind.to_string(),
                scope: tag.scope.clone(),
                seq,
                data: Bytes::copy_from_slice(data),
                added_ms,
            },
        );
        Ok(())
    }

    fn rotate(&self, g: &mut Inner) -> io::Result<()> {
        g.file.sync_data()?;
        let first = g.next_id;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, first))?;
        *self.sync_file.lock().unwrap() = Some(file.try_clone()?);
        g.file = file;
        g.segments.push_back(first);
        g.segment_bytes = 0;
        Ok(())
    }

    /// Hands out up to `max` records no writer holds yet.
    pub fn take(&self, max: usize) -> Vec<OutboxEntry> {
        let mut g = self.inner.lock().unwrap();
        let from = g.handed + 1;
        let out: Vec<OutboxEntry> = g
            .pending
            .range(from..)
            .take(max)
            .map(|(_, e)| e.clone())
            .collect();
        if let Some(last) = out.last() {
            g.handed = last.id.parse().unwrap_or(g.handed);
        }
        out
    }

    /// Confirms records; advances and saves the committed mark.
    pub fn ack(&self, ids: &[String]) -> io::Result<()> {
        let mut g = self.inner.lock().unwrap();
        for id in ids {
            if let Ok(n) = id.parse::<u64>() {
                g.pending.remove(&n);
            }
        }
        let mark = match g.pending.keys().next() {
            Some(first) => first - 1,
            None => g.next_id - 1,
        };
        if mark > g.committed {
            let tmp = self.dir.join("committed.tmp");
            fs::write(&tmp, format!("{mark}\n"))?;
            fs::rename(&tmp, self.dir.join("committed"))?;
            g.committed = mark;
            self.drop_committed_segments(&mut g);
        }
        Ok(())
    }

    /// Deletes closed segments whose records are all committed.
    fn drop_committed_segments(&self, g: &mut Inner) {
        while g.segments.len() > 1 {
            let next_first = g.segments[1];
            if next_first - 1 > g.committed {
                break;
            }
            let first = g.segments.pop_front().unwrap();
            let _ = fs::remove_file(segment_path(&self.dir, first));
        }
    }

    pub fn stats(&self) -> OutboxStats {
        let g = self.inner.lock().unwrap();
        OutboxStats {
            depth: g.pending.len() as u64,
            oldest_added_ms: g.pending.values().next().map(|e| e.added_ms),
        }
    }

    /// Flushes appended records to disk (fsync) if anything was appended since last time.
    pub fn sync(&self) -> io::Result<()> {
        {
            let mut g = self.inner.lock().unwrap();
            if !g.dirty {
                return Ok(());
            }
            g.dirty = false;
        }
        if let Some(f) = self.sync_file.lock().unwrap().as_ref() {
            f.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "streamedge-outbox-{name}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn records_survive_reopen_until_acked() {
        let dir = tmpdir("reopen");
        let tag = OutboxTag::new("chat", "s1");
        {
            let o = FileOutbox::open(&dir).unwrap();
            for i in 1..=5u64 {
                o.append(&tag, i, format!("m{i}").as_bytes()).unwrap();
            }
            let got = o.take(3);
            assert_eq!(got.len(), 3);
            o.ack(&[got[0].id.clone(), got[1].id.clone()]).unwrap();
            assert_eq!(o.stats().depth, 3);
        }
        let o = FileOutbox::open(&dir).unwrap();
        let got = o.take(10);
        let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(&got[0].data[..], b"m3");
        assert_eq!(got[0].kind, "chat");
        assert_eq!(got[0].scope, "s1");
        // New ids continue after the old ones.
        o.append(&tag, 6, b"m6").unwrap();
        let next = o.take(10);
        assert_eq!(next.len(), 1);
        assert!(next[0].id.parse::<u64>().unwrap() > got[2].id.parse::<u64>().unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn acked_out_of_order_commits_only_the_contiguous_prefix() {
        let dir = tmpdir("order");
        let tag = OutboxTag::new("chat", "s");
        {
            let o = FileOutbox::open(&dir).unwrap();
            for i in 1..=3u64 {
                o.append(&tag, i, b"x").unwrap();
            }
            let got = o.take(3);
            o.ack(&[got[2].id.clone()]).unwrap();
        }
        let o = FileOutbox::open(&dir).unwrap();
        let seqs: Vec<u64> = o.take(10).iter().map(|e| e.seq).collect();
        // Record 3 may come again (harmless: writes are idempotent); 1 and 2 must.
        assert!(seqs.starts_with(&[1, 2]));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tmpdir("torn");
        let tag = OutboxTag::new("chat", "s");
        {
            let o = FileOutbox::open(&dir).unwrap();
            o.append(&tag, 1, b"whole").unwrap();
            o.append(&tag, 2, b"torn-record").unwrap();
        }
        let seg = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let o = FileOutbox::open(&dir).unwrap();
        let got = o.take(10);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].data[..], b"whole");
        o.append(&tag, 3, b"after").unwrap();
        drop(o);
        let o = FileOutbox::open(&dir).unwrap();
        let datas: Vec<Bytes> = o.take(10).into_iter().map(|e| e.data).collect();
        assert_eq!(datas, vec![Bytes::from("whole"), Bytes::from("after")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn take_does_not_hand_out_a_record_twice() {
        let dir = tmpdir("take");
        let o = FileOutbox::open(&dir).unwrap();
        let tag = OutboxTag::new("k", "s");
        for i in 0..10 {
            o.append(&tag, i, b"x").unwrap();
        }
        let a = o.take(4);
        let b = o.take(100);
        assert_eq!(a.len() + b.len(), 10);
        assert!(a.iter().all(|x| !b.contains(x)));
        assert!(o.take(10).is_empty());
        o.sync().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
