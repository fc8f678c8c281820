//! Writes PyTorch state-dict files as `torch.save(model.state_dict(), path)` does (zip
//! archive: `archive/data.pkl` with pickle protocol 2, `archive/data/N` raw little-endian
//! storages, `archive/version`), so tests can load real-format `.pt` teachers without Python.

use std::io::Write;
use std::path::Path;

/// Pickle opcodes used below (protocol 2).
fn global(out: &mut Vec<u8>, module: &str, name: &str) {
    out.push(b'c');
    out.extend_from_slice(module.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
}
fn unicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}
fn int(out: &mut Vec<u8>, v: usize) {
    out.push(b'J');
    out.extend_from_slice(&(v as i32).to_le_bytes());
}
fn int_tuple(out: &mut Vec<u8>, vs: &[usize]) {
    out.push(b'(');
    for &v in vs {
        int(out, v);
    }
    out.push(b't');
}

/// `tensors`: (name, shape, f32 values) in state-dict order.
pub fn write_state_dict(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let mut pkl = vec![0x80, 2];
    global(&mut pkl, "collections", "OrderedDict");
    pkl.push(b')');
    pkl.push(b'R');
    pkl.push(b'(');
    for (i, (name, shape, _)) in tensors.iter().enumerate() {
        unicode(&mut pkl, name);
        global(&mut pkl, "torch._utils", "_rebuild_tensor_v2");
        pkl.push(b'(');
        // storage: persistent id ('storage', FloatStorage, key, 'cpu', numel)
        pkl.push(b'(');
        unicode(&mut pkl, "storage");
        global(&mut pkl, "torch", "FloatStorage");
        unicode(&mut pkl, &i.to_string());
        unicode(&mut pkl, "cpu");
        int(&mut pkl, shape.iter().product());
        pkl.push(b't');
        pkl.push(b'Q'); // BINPERSID
        int(&mut pkl, 0); // storage offset
        int_tuple(&mut pkl, shape);
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        int_tuple(&mut pkl, &stride);
        pkl.push(0x89); // requires_grad = False
        global(&mut pkl, "collections", "OrderedDict");
        pkl.push(b')');
        pkl.push(b'R');
        pkl.push(b't');
        pkl.push(b'R');
    }
    pkl.push(b'u'); // SETITEMS
    pkl.push(b'.');
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(&pkl).unwrap();
    for (i, (_, _, values)) in tensors.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), opts).unwrap();
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        zip.write_all(&bytes).unwrap();
    }
    zip.start_file("archive/version", opts).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}

/// A zip archive with the given `(name, bytes)` entries, stored: for files that are not what
/// `torch.save` writes.
pub fn write_archive(path: &Path, entries: &[(&str, &[u8])]) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}
