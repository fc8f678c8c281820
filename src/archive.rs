//! Archives and pickles that come from outside the platform, checked before any of their
//! bytes is trusted.
//!
//! - [`check_zip`]: a zip archive may hold at most [`MAX_ZIP_ENTRIES`] entries; no entry name
//!   may leave the archive (absolute paths, `..`, backslashes, drive letters) and none may be a
//!   symlink; entries may not share bytes (the overlapping-entry zip bomb), may not inflate
//!   more than [`MAX_DEFLATE_RATIO`] times (deflate's own limit is about 1032), and together
//!   must fit in the memory this machine has ([`memory_limit`]); every entry must match the
//!   CRC-32 the archive records for it.
//! - [`check_pickle`]: the platform reads pickles as data (candle's reader builds tensors from
//!   the opcodes and runs nothing), but a file that would run code when Python unpickles it is
//!   not a state dict and is refused: every global it names (`GLOBAL`, `INST`, `STACK_GLOBAL`)
//!   must be one of the tensor rebuilds and containers on [`ALLOWED_GLOBALS`], and the
//!   extension-registry opcodes are refused outright.

use crate::error::{Error, Result};
use crate::limits::{human_bytes, memory_limit};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Entries a zip archive may hold.
pub const MAX_ZIP_ENTRIES: usize = 100_000;
/// How many times a compressed entry may inflate.
pub const MAX_DEFLATE_RATIO: u64 = 1_100;
/// Bytes a pickle (`data.pkl`) may hold: a state dict's pickle names its tensors, it does not
/// hold them.
pub const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// The globals a PyTorch state dict's pickle names: its containers, the tensor and parameter
/// rebuild functions and the storage types (as `torch.save` writes them, torch 1.x and 2.x).
pub const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "Tensor"),
    ("torch", "Size"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
    ("torch", "float32"),
    ("torch", "float64"),
    ("torch", "float16"),
    ("torch", "bfloat16"),
    ("torch", "int64"),
    ("torch", "int32"),
    ("torch", "uint8"),
    ("torch", "bool"),
    // Protocol 2 writes a `bytes` value as `_codecs.encode(text, "latin1")`.
    ("_codecs", "encode"),
];

/// Whether `name` stays inside the archive when unpacked: relative, no `..`, no backslash, no
/// drive letter, no NUL.
fn enclosed(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && !name.split('/').any(|c| c == "..")
        && name.chars().nth(1).is_none_or(|c| c != ':')
}

/// An entry of `packed` bytes that unpacks to `size`: a stored entry holds what it declares, a
/// compressed one may inflate at most [`MAX_DEFLATE_RATIO`] times.
fn inflation(name: &str, stored: bool, size: u64, packed: u64) -> std::result::Result<(), String> {
    if stored && size != packed {
        return Err(format!(
            "zip entry `{name}` is stored uncompressed but declares {size} bytes in {packed}"
        ));
    }
    if size > packed.max(1).saturating_mul(MAX_DEFLATE_RATIO) {
        return Err(format!(
            "zip entry `{name}` inflates {packed} bytes to {size}, more than {MAX_DEFLATE_RATIO}x: refused as a zip bomb"
        ));
    }
    Ok(())
}

/// Checks a zip archive (see the module docs) and returns its entry names.
pub fn check_zip(path: &Path) -> Result<Vec<String>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        Error::data(
            path,
            format!("not a zip archive (as torch.save writes): {e}"),
        )
    })?;
    if zip.len() > MAX_ZIP_ENTRIES {
        return Err(Error::data(
            path,
            format!(
                "the archive lists {} entries, more than the {MAX_ZIP_ENTRIES} allowed",
                zip.len()
            ),
        ));
    }
    let mut names = Vec::with_capacity(zip.len());
    let mut spans: Vec<(u64, u64, String)> = Vec::with_capacity(zip.len());
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| Error::data(path, format!("zip entry {i} is unreadable: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| Error::data(path, format!("zip entry {i} has an unreadable name: {e}")))?
            .to_string();
        if !enclosed(&name) {
            return Err(Error::data(
                path,
                format!("zip entry `{name}` would leave the archive's folder"),
            ));
        }
        if entry.is_symlink() {
            return Err(Error::data(
                path,
                format!("zip entry `{name}` is a symlink; archives are read without links"),
            ));
        }
        let (size, packed) = (entry.size(), entry.compressed_size());
        let stored = entry.compression() == zip::CompressionMethod::Stored;
        inflation(&name, stored, size, packed).map_err(|m| Error::data(path, m))?;
        total = total.saturating_add(size);
        let start = entry.header_start();
        let data = entry.data_start().unwrap_or(start);
        spans.push((start, data.saturating_add(packed), name.clone()));
        names.push(name);
    }
    let limit = memory_limit();
    if total > limit {
        return Err(Error::data(
            path,
            format!(
                "the archive unpacks to {}, more than this machine's memory ({})",
                human_bytes(total),
                human_bytes(limit)
            ),
        ));
    }
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(Error::data(
                path,
                format!(
                    "zip entries `{}` and `{}` share bytes: refused as a zip bomb",
                    w[0].2, w[1].2
                ),
            ));
        }
    }
    // Every entry read through once: the zip crate checks each one's CRC-32 at its end, so a
    // damaged archive is refused here rather than read as other values.
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| Error::data(path, format!("zip entry {i} is unreadable: {e}")))?;
        let name = entry.name().map(|n| n.to_string()).unwrap_or_default();
        std::io::copy(&mut entry, &mut std::io::sink())
            .map_err(|e| Error::data(path, format!("zip entry `{name}` is damaged: {e}")))?;
    }
    Ok(names)
}

/// Reads entry `name` of an archive already passed by [`check_zip`], at most `limit` bytes.
pub fn read_zip_entry(path: &Path, name: &str, limit: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| Error::data(path, format!("not a zip archive: {e}")))?;
    let entry = zip
        .by_name(name)
        .map_err(|e| Error::data(path, format!("zip entry `{name}`: {e}")))?;
    if entry.size() > limit {
        return Err(Error::data(
            path,
            format!(
                "zip entry `{name}` holds {}, more than the {} allowed",
                human_bytes(entry.size()),
                human_bytes(limit)
            ),
        ));
    }
    let mut out = Vec::with_capacity(entry.size() as usize);
    entry
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| Error::data(path, format!("zip entry `{name}`: {e}")))?;
    Ok(out)
}

/// A checked PyTorch archive: the zip passes [`check_zip`] and its one `*/data.pkl` passes
/// [`check_pickle`].
pub fn check_torch_archive(path: &Path) -> Result<()> {
    checked_pickle(path).map(|_| ())
}

/// [`check_torch_archive`], returning the `data.pkl` entry's name and bytes.
fn checked_pickle(path: &Path) -> Result<(String, Vec<u8>)> {
    let names = check_zip(path)?;
    let pkls: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with("/data.pkl") || n.as_str() == "data.pkl")
        .collect();
    let pkl = match pkls.as_slice() {
        [one] => one.as_str(),
        [] => {
            return Err(Error::data(
                path,
                "no data.pkl in the archive: expected a file written by torch.save",
            ))
        }
        _ => {
            return Err(Error::data(
                path,
                format!(
                    "{} data.pkl entries in the archive, expected one",
                    pkls.len()
                ),
            ))
        }
    };
    let bytes = read_zip_entry(path, pkl, MAX_PICKLE_BYTES)?;
    check_pickle(&bytes).map_err(|msg| Error::data(path, format!("{pkl}: {msg}")))?;
    Ok((pkl.to_string(), bytes))
}

/// The tensors of a PyTorch file written by `torch.save`, wherever they sit in the pickled
/// object, named by their path in it: a state dict's own names (`network.0.weight`), a dict
/// holding one (`model_weights.network.0.weight`, as CleanRL's C51 scripts save
/// `{"model_weights": ..., "args": ...}`), a tuple of them (`0.fc1.weight`, `1.fc1.weight`, as
/// its continuous-action scripts save `(actor, qf1, qf2)`). Values that are not tensors are
/// skipped. The archive passes [`check_torch_archive`] first; tensors are copied out of their
/// storage entries with every offset and length checked.
pub fn read_torch_tensors(path: &Path) -> Result<Vec<(String, candle_core::Tensor)>> {
    use candle_core::pickle::{Object, Stack};
    let (pkl, bytes) = checked_pickle(path)?;
    let bad = |m: String| Error::data(path, format!("{pkl}: {m}"));
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut std::io::Cursor::new(&bytes))
        .map_err(|e| bad(format!("unreadable pickle: {e}")))?;
    let root = stack
        .finalize()
        .map_err(|e| bad(format!("unreadable pickle: {e}")))?;
    let dir = Path::new(pkl.strip_suffix(".pkl").unwrap_or(&pkl));
    let mut infos = Vec::new();
    // Depth-first over containers; a tensor is a REDUCE the rebuild functions recognise.
    let mut todo: Vec<(String, Object, usize)> = vec![(String::new(), root, 0)];
    while let Some((prefix, obj, depth)) = todo.pop() {
        if depth > 16 {
            return Err(bad(format!(
                "objects nested deeper than 16 levels at `{prefix}`"
            )));
        }
        let join = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match obj {
            Object::Dict(items) => {
                for (k, v) in items {
                    let key = match k {
                        Object::Unicode(s) => s,
                        Object::Int(i) => i.to_string(),
                        Object::Long(i) => i.to_string(),
                        _ => continue,
                    };
                    if key != "_metadata" {
                        todo.push((join(&key), v, depth + 1));
                    }
                }
            }
            Object::Tuple(items) | Object::List(items) => {
                for (i, v) in items.into_iter().enumerate() {
                    todo.push((join(&i.to_string()), v, depth + 1));
                }
            }
            // The state dict of `torch.save(module.state_dict())` with `_metadata` attached.
            Object::Build { callable, args } if matches!(*callable, Object::Dict(_)) => {
                todo.push((prefix, *callable, depth + 1));
                drop(args);
            }
            other => {
                if let Ok(Some(info)) = other.into_tensor_info(Object::Unicode(prefix.clone()), dir)
                {
                    infos.push(info);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(infos.len());
    for info in infos {
        let name = info.name.clone();
        let storage = read_zip_entry(path, &info.path, memory_limit())?;
        let layout = &info.layout;
        let fortran = layout.is_fortran_contiguous();
        if !layout.is_contiguous() && !fortran {
            return Err(Error::data(
                path,
                format!("tensor `{name}` is strided ({layout:?}); save contiguous tensors"),
            ));
        }
        let start = layout.start_offset();
        let len = layout.shape().elem_count() * info.dtype.size_in_bytes();
        let Some(data) = storage.get(start..start.saturating_add(len)) else {
            return Err(Error::data(
                path,
                format!(
                    "tensor `{name}` needs bytes {start}..{} of `{}`, which holds {}",
                    start.saturating_add(len),
                    info.path,
                    storage.len()
                ),
            ));
        };
        let dims = layout.dims().to_vec();
        let tensor = if fortran && dims.len() > 1 {
            let rev: Vec<usize> = dims.iter().rev().copied().collect();
            let t = candle_core::Tensor::from_raw_buffer(
                data,
                info.dtype,
                &rev,
                &candle_core::Device::Cpu,
            )?;
            let perm: Vec<usize> = (0..dims.len()).rev().collect();
            t.permute(perm)?.contiguous()?
        } else {
            candle_core::Tensor::from_raw_buffer(
                data,
                info.dtype,
                &dims,
                &candle_core::Device::Cpu,
            )?
        };
        out.push((name, tensor));
    }
    Ok(out)
}

/// A pickle opcode's argument.
enum Arg {
    None,
    Fixed(usize),
    /// A little-endian length of this many bytes, then that many bytes.
    Counted(usize),
    Line,
    TwoLines,
}

fn opcode_arg(op: u8) -> Option<Arg> {
    use Arg::*;
    Some(match op {
        b'(' | b'.' | b'0' | b'1' | b'2' | b'N' | b'Q' | b'R' | b'a' | b'b' | b'd' | b'}'
        | b'e' | b'l' | b']' | b'o' | b's' | b't' | b')' | b'u' | 0x81 | 0x85 | 0x86 | 0x87
        | 0x88 | 0x89 | 0x8f | 0x90 | 0x91 | 0x92 | 0x93 | 0x94 | 0x97 | 0x98 => None,
        b'K' | b'q' | b'h' | 0x80 | 0x82 => Fixed(1),
        b'M' | 0x83 => Fixed(2),
        b'J' | b'r' | b'j' | 0x84 => Fixed(4),
        b'G' | 0x95 => Fixed(8),
        b'U' | b'C' | 0x8c | 0x8a => Counted(1),
        b'T' | b'X' | b'B' | 0x8b => Counted(4),
        0x8d | 0x8e | 0x96 => Counted(8),
        b'I' | b'L' | b'F' | b'S' | b'V' | b'P' | b'p' | b'g' => Line,
        b'c' | b'i' => TwoLines,
        _ => return Option::None,
    })
}

fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

fn allowed(module: &str, name: &str) -> std::result::Result<(), String> {
    if ALLOWED_GLOBALS.contains(&(module, name)) {
        Ok(())
    } else {
        Err(format!(
            "names the global `{module}.{name}`, which a state dict does not hold (a pickle that calls it could run code); refused"
        ))
    }
}

/// Walks every opcode of a pickle and checks the globals it names (see the module docs).
/// `Err` is the reason, without the file name.
pub fn check_pickle(bytes: &[u8]) -> std::result::Result<(), String> {
    // The strings the most recent opcodes pushed, and the memo's strings: enough to read the
    // module and name a `STACK_GLOBAL` takes from the stack, which protocol 4+ pushes right
    // before it (possibly memoised and fetched back).
    let mut recent: Vec<Option<String>> = Vec::new();
    let mut memo: HashMap<u64, Option<String>> = HashMap::new();
    let mut pos = 0usize;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    while pos < bytes.len() {
        let at = pos;
        let op = bytes[pos];
        pos += 1;
        let arg = opcode_arg(op)
            .ok_or_else(|| format!("unknown pickle opcode 0x{op:02x} at byte {at}"))?;
        let truncated = || format!("pickle ends inside the opcode at byte {at}");
        let payload: &[u8] = match arg {
            Arg::None => &[],
            Arg::Fixed(n) => {
                let p = bytes.get(pos..pos + n).ok_or_else(truncated)?;
                pos += n;
                p
            }
            Arg::Counted(n) => {
                let len = le(bytes.get(pos..pos + n).ok_or_else(truncated)?);
                pos += n;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .filter(|&e| e <= bytes.len())
                    .ok_or_else(truncated)?;
                let p = &bytes[pos..end];
                pos = end;
                p
            }
            Arg::Line | Arg::TwoLines => {
                let lines = if matches!(arg, Arg::TwoLines) { 2 } else { 1 };
                let start = pos;
                for _ in 0..lines {
                    let nl = bytes[pos..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .ok_or_else(truncated)?;
                    pos += nl + 1;
                }
                &bytes[start..pos]
            }
        };
        match op {
            b'c' | b'i' => {
                let s = text(payload);
                let mut parts = s.split('\n');
                let (module, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                allowed(module, name)?;
                recent.clear();
            }
            0x93 => {
                let n = recent.len();
                match (n >= 2).then(|| (&recent[n - 2], &recent[n - 1])) {
                    Some((Some(module), Some(name))) => allowed(module, name)?,
                    _ => {
                        return Err(format!(
                            "STACK_GLOBAL at byte {at} takes a module and name this check cannot read; refused"
                        ))
                    }
                }
                recent.clear();
            }
            0x82..=0x84 => {
                return Err(format!(
                    "extension-registry opcode at byte {at} names an object by code; refused"
                ))
            }
            b'X' | 0x8c | 0x8d | b'U' | b'T' => recent.push(Some(text(payload))),
            b'V' | b'S' => {
                let s = text(&payload[..payload.len() - 1]);
                recent.push(Some(s.trim_matches(|c| c == '\'' || c == '"').to_string()));
            }
            b'q' | b'r' | b'p' => {
                let idx = if op == b'p' {
                    text(&payload[..payload.len() - 1])
                        .trim()
                        .parse()
                        .unwrap_or(u64::MAX)
                } else {
                    le(payload)
                };
                memo.insert(idx, recent.last().cloned().flatten());
            }
            0x94 => {
                let idx = memo.len() as u64;
                memo.insert(idx, recent.last().cloned().flatten());
            }
            b'h' | b'j' | b'g' => {
                let idx = if op == b'g' {
                    text(&payload[..payload.len() - 1])
                        .trim()
                        .parse()
                        .unwrap_or(u64::MAX)
                } else {
                    le(payload)
                };
                recent.push(memo.get(&idx).cloned().flatten());
            }
            0x80 | 0x95 => {}
            b'.' => return Ok(()),
            _ => recent.clear(),
        }
    }
    Err("pickle has no STOP opcode: the file is truncated".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(module: &str, name: &str) -> Vec<u8> {
        let mut v = vec![b'c'];
        v.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        v
    }

    fn short_unicode(s: &str) -> Vec<u8> {
        let mut v = vec![0x8c, s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn a_state_dict_pickle_passes_and_os_system_is_refused() {
        // collections.OrderedDict() then STOP.
        let mut ok = vec![0x80, 2];
        ok.extend(global("collections", "OrderedDict"));
        ok.extend([b')', b'R', b'.']);
        assert_eq!(check_pickle(&ok), Ok(()));

        // os.system('echo pwned'): GLOBAL, a string argument, TUPLE1, REDUCE.
        let mut evil = vec![0x80, 2];
        evil.extend(global("os", "system"));
        evil.extend(short_unicode("echo pwned"));
        evil.extend([0x85, b'R', b'.']);
        let e = check_pickle(&evil).unwrap_err();
        assert!(e.contains("os.system"), "{e}");

        // The same through protocol 4's STACK_GLOBAL, with the names memoised.
        let mut evil4 = vec![0x80, 4];
        evil4.extend(short_unicode("posix"));
        evil4.push(0x94);
        evil4.extend(short_unicode("system"));
        evil4.push(0x94);
        evil4.extend([0x93, b'.']);
        let e = check_pickle(&evil4).unwrap_err();
        assert!(e.contains("posix.system"), "{e}");

        // STACK_GLOBAL whose names were memoised, popped, and fetched back.
        let mut memo = vec![0x80, 4];
        memo.extend(short_unicode("builtins"));
        memo.extend([b'q', 0]);
        memo.extend(short_unicode("eval"));
        memo.extend([b'q', 1, b'0', b'0', b'h', 0, b'h', 1, 0x93, b'.']);
        let e = check_pickle(&memo).unwrap_err();
        assert!(e.contains("builtins.eval"), "{e}");
        // One whose names this check cannot follow is refused, not let through.
        let mut opaque = vec![0x80, 4];
        opaque.extend(short_unicode("builtins"));
        opaque.extend([b'N', 0x93, b'.']);
        assert!(check_pickle(&opaque).unwrap_err().contains("cannot read"));
    }

    #[test]
    fn malformed_pickles_are_named_errors() {
        assert!(check_pickle(&[0x80, 2, 0xff]).unwrap_err().contains("0xff"));
        assert!(check_pickle(&[0x80, 2, b'X', 9, 0, 0, 0, b'a'])
            .unwrap_err()
            .contains("ends inside"));
        assert!(check_pickle(&[0x80, 2, b'N']).unwrap_err().contains("STOP"));
        assert!(check_pickle(&[0x80, 2, 0x82, 1, b'.'])
            .unwrap_err()
            .contains("extension"));
        // A huge counted length does not allocate or overflow.
        let mut huge = vec![0x80, 4, 0x8d];
        huge.extend(u64::MAX.to_le_bytes());
        assert!(check_pickle(&huge).unwrap_err().contains("ends inside"));
        // INST names its class inline, like GLOBAL.
        let mut inst = vec![b'(', b'i'];
        inst.extend_from_slice(b"subprocess\nPopen\n");
        inst.push(b'.');
        assert!(check_pickle(&inst)
            .unwrap_err()
            .contains("subprocess.Popen"));
    }

    #[test]
    fn entry_names_must_stay_inside_the_archive() {
        for bad in ["/etc/passwd", "../x", "a/../../x", "a\\b", "C:/x", ""] {
            assert!(!enclosed(bad), "{bad}");
        }
        for good in ["archive/data.pkl", "archive/data/0", "a..b/c"] {
            assert!(enclosed(good), "{good}");
        }
    }

    #[test]
    fn entries_that_inflate_past_the_ratio_or_lie_about_their_size_are_refused() {
        assert!(inflation("a", true, 100, 100).is_ok());
        assert!(inflation("a", false, 100_000, 100).is_ok());
        assert!(inflation("a", false, 1 << 40, 1 << 20)
            .unwrap_err()
            .contains("zip bomb"));
        assert!(inflation("a", false, 5_000, 0)
            .unwrap_err()
            .contains("zip bomb"));
        assert!(inflation("a", true, 1 << 31, 30)
            .unwrap_err()
            .contains("declares"));
    }
}
