//! `hf://datasets/...` streamed from the Hub (feature `s3`): the revision pinned by one API call,
//! the manifest downloaded, each Parquet file read by byte ranges through the object store's HTTP
//! client, never downloaded whole. The Hub here is a small HTTP server in the test speaking the
//! parts of the Hub's protocol the client uses: `GET /api/datasets/REPO/revision/REV?blobs=true`,
//! `GET /datasets/REPO/resolve/COMMIT/PATH` (Parquet files redirected to a content server, as the
//! Hub redirects large files), and byte ranges there.
#![cfg(feature = "s3")]

mod common;

use common::{ok, reads, TINY_DISTILL as DISTILL};

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const BIN: &str = env!("CARGO_BIN_EXE_reincarnate");
const REPO: &str = "org/hist";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_test_token";

/// What the server saw.
#[derive(Default)]
struct Log {
    /// Byte-range requests to the content server and the bytes they returned.
    range_requests: u64,
    range_bytes: u64,
    /// Whole-file answers of the content server (a download).
    whole_parquet: u64,
    whole_bytes: u64,
    /// Requests without the token (answered 401).
    refused: u64,
}

struct Hub {
    endpoint: String,
    log: Arc<Mutex<Log>>,
}

/// Every file under `dir`, relative, `/`-separated, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Serves the folder `repo` as dataset repo `REPO` at commit `COMMIT` (revisions `main` and the
/// commit itself), listing every file but `hidden`, and asking for `TOKEN`.
fn serve(repo: PathBuf, hidden: Option<&str>) -> Hub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Log::default()));
    let (l, e, h) = (log.clone(), endpoint.clone(), hidden.map(str::to_string));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (repo, l, e, h) = (repo.clone(), l.clone(), e.clone(), h.clone());
            std::thread::spawn(move || answer(stream, &repo, &l, &e, h.as_deref()));
        }
    });
    Hub { endpoint, log }
}

fn respond(s: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

fn answer(mut s: TcpStream, repo: &Path, log: &Mutex<Log>, endpoint: &str, hidden: Option<&str>) {
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let parts: Vec<&str> = line.split_whitespace().collect();
    let (method, target) = (parts[0].to_string(), parts[1].to_string());
    let (mut range, mut auth) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        match k.trim().to_ascii_lowercase().as_str() {
            "range" => range = Some(v.trim().to_string()),
            "authorization" => auth = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let cdn = path.strip_prefix("/cdn/");
    // The content server takes signed URLs, not the token (as the Hub's does).
    if cdn.is_none() && auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        log.lock().unwrap().refused += 1;
        return respond(&mut s, "401 Unauthorized", &[], b"{\"error\":\"token\"}");
    }
    let listed: Vec<String> = files(repo)
        .into_iter()
        .filter(|f| Some(f.as_str()) != hidden)
        .collect();
    let api = format!("/api/datasets/{REPO}/revision/");
    if let Some(rev) = path.strip_prefix(&api) {
        if rev != "main" && rev != COMMIT {
            return respond(&mut s, "404 Not Found", &[], b"{\"error\":\"revision\"}");
        }
        let blobs = query.split('&').any(|kv| kv == "blobs=true");
        let siblings: Vec<serde_json::Value> = listed
            .iter()
            .map(|f| {
                let size = std::fs::metadata(repo.join(f)).unwrap().len();
                let mut v = serde_json::json!({ "rfilename": f });
                if blobs {
                    v["size"] = size.into();
                    v["blobId"] = format!("blob-{size}").into();
                    if f.ends_with(".parquet") {
                        v["lfs"] =
                            serde_json::json!({ "size": size, "sha256": "00", "pointerSize": 134 });
                    }
                }
                v
            })
            .collect();
        let body = serde_json::json!({ "id": REPO, "sha": COMMIT, "siblings": siblings });
        return respond(&mut s, "200 OK", &[], body.to_string().as_bytes());
    }
    let resolve = format!("/datasets/{REPO}/resolve/{COMMIT}/");
    if let Some(file) = path.strip_prefix(&resolve) {
        if !listed.iter().any(|f| f == file) {
            return respond(&mut s, "404 Not Found", &[], b"");
        }
        let data = std::fs::read(repo.join(file)).unwrap();
        let etag = format!("\"blob-{}\"", data.len());
        let mut headers = vec![("X-Repo-Commit".to_string(), COMMIT.to_string())];
        if file.ends_with(".parquet") {
            let to = format!("{endpoint}/cdn/{file}?signature=x");
            headers.push(("X-Linked-Etag".into(), etag));
            headers.push(("X-Linked-Size".into(), data.len().to_string()));
            headers.push(("Location".into(), to));
            return respond(&mut s, "302 Found", &headers, b"");
        }
        headers.push(("ETag".into(), etag));
        return match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
            Some(r) => {
                let (a, b) = span(r, data.len());
                headers.push((
                    "Content-Range".into(),
                    format!("bytes {a}-{b}/{}", data.len()),
                ));
                respond(&mut s, "206 Partial Content", &headers, &data[a..=b])
            }
            None => respond(&mut s, "200 OK", &headers, &data),
        };
    }
    let Some(file) = cdn else {
        return respond(&mut s, "404 Not Found", &[], b"");
    };
    let Ok(data) = std::fs::read(repo.join(file)) else {
        return respond(&mut s, "404 Not Found", &[], b"");
    };
    let head_only = method == "HEAD";
    match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = span(r, data.len());
            let body = &data[a..=b];
            {
                let mut l = log.lock().unwrap();
                l.range_requests += 1;
                l.range_bytes += body.len() as u64;
            }
            let cr = format!("bytes {a}-{b}/{}", data.len());
            respond(
                &mut s,
                "206 Partial Content",
                &[("Content-Range".into(), cr)],
                if head_only { b"" } else { body },
            )
        }
        None => {
            let mut l = log.lock().unwrap();
            l.whole_parquet += 1;
            l.whole_bytes += data.len() as u64;
            drop(l);
            respond(&mut s, "200 OK", &[], if head_only { b"" } else { &data });
        }
    }
}

/// The first and last byte of the range `A-B` (or `A-`) of a `len`-byte file.
fn span(r: &str, len: usize) -> (usize, usize) {
    let (a, b) = r.split_once('-').unwrap();
    let a: usize = a.parse().unwrap();
    let b = if b.is_empty() {
        len - 1
    } else {
        b.parse::<usize>().unwrap().min(len - 1)
    };
    (a, b)
}

/// `reincarnate ARGS` as a machine with its own Hugging Face cache and object-store cache.
fn run(hub: &Hub, machine: &Path, args: &[&str], token: bool) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("HF_ENDPOINT", &hub.endpoint)
        .env("HF_HOME", machine.join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env("REINCARNATE_CACHE", machine.join("cache"))
        .env("NO_PROXY", "127.0.0.1");
    if token {
        c.env("HF_TOKEN", TOKEN);
    } else {
        c.env_remove("HF_TOKEN");
    }
    c.output().unwrap()
}

fn distill(hub: &Hub, machine: &Path, data: &str, out: &Path) -> Output {
    let mut args = vec!["distill", "--data", data, "--out", out.to_str().unwrap()];
    args.extend(DISTILL);
    run(hub, machine, &args, true)
}

#[test]
fn a_hub_dataset_is_streamed_by_byte_ranges_and_distils_as_from_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("repo");
    let o = Command::new(BIN)
        .args([
            "collect",
            "--env",
            "dark_room",
            "--algo",
            "ppo",
            "--tasks",
            "train",
        ])
        .args(["--runs", "3", "--steps", "1500", "--out"])
        .arg(&data)
        .output()
        .unwrap();
    ok(&o, "collect");
    let parquet: Vec<String> = files(&data)
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert_eq!(parquet.len(), 3, "{parquet:?}");
    let total: u64 = parquet
        .iter()
        .map(|f| std::fs::metadata(data.join(f)).unwrap().len())
        .sum();
    let hub = serve(data.clone(), None);
    let url = format!("hf://datasets/{REPO}");

    // A machine distils from the Hub: the Parquet bytes come by ranges, once.
    let machine = tmp.path().join("machine");
    let streamed = tmp.path().join("ad-hub");
    let out = ok(
        &distill(&hub, &machine, &url, &streamed),
        "distill from the Hub",
    );
    let (fetched, size, requests, _) = reads(&out);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    assert!(
        (size - mib(total)).abs() < 0.006,
        "{size} vs {total} bytes: {out}"
    );
    let (served, served_requests, whole) = {
        let l = hub.log.lock().unwrap();
        (l.range_bytes, l.range_requests, l.whole_parquet)
    };
    assert_eq!(whole, 0, "a Parquet file was downloaded whole");
    assert_eq!(served_requests, requests, "{out}");
    assert!(
        (fetched - mib(served)).abs() < 0.006,
        "{out} vs {served} bytes served"
    );
    // Every column of every file is decoded once: the bytes read are the dataset's, no more.
    assert!(served > 0 && served <= total, "{served} of {total}");
    // Neither cache holds the data: pointers in the mirror, nothing in the Hugging Face cache.
    let mirror = machine.join(format!("cache/hf/datasets/{REPO}/{COMMIT}"));
    for f in &parquet {
        let len = std::fs::metadata(mirror.join(f)).unwrap().len();
        assert!(len < 400, "{f}: {len} bytes in the mirror");
    }
    if machine.join("hf").exists() {
        let cached: Vec<String> = files(&machine.join("hf"))
            .into_iter()
            .filter(|f| f.ends_with(".parquet"))
            .collect();
        assert!(cached.is_empty(), "{cached:?}");
    }

    // Again on the same machine: nothing more from the content server.
    let again = tmp.path().join("ad-hub-again");
    let out2 = ok(&distill(&hub, &machine, &url, &again), "distill again");
    let (fetched2, _, requests2, cached2) = reads(&out2);
    assert_eq!((fetched2, requests2), (0.0, 0), "{out2}");
    assert!(cached2 >= fetched, "{out2}");
    assert_eq!(hub.log.lock().unwrap().range_requests, served_requests);

    // The same files read from disk give the same model, tensor for tensor.
    let local = tmp.path().join("ad-local");
    let o = distill(
        &hub,
        &tmp.path().join("other"),
        data.to_str().unwrap(),
        &local,
    );
    ok(&o, "distill from the folder");
    common::assert_same_tensors(&local, &streamed, "model.safetensors");
    common::assert_same_tensors(&local, &again, "model.safetensors");

    // With streaming off the same server serves the download path (hf-hub, whole files into the
    // Hugging Face cache): the same model again.
    let bytes_of = |l: &Log| l.range_bytes + l.whole_bytes;
    let before = bytes_of(&hub.log.lock().unwrap());
    let downloaded = tmp.path().join("ad-downloaded");
    let mut args = vec![
        "distill",
        "--data",
        &url,
        "--out",
        downloaded.to_str().unwrap(),
    ];
    args.extend(DISTILL);
    let o = Command::new(BIN)
        .args(&args)
        .env("HF_ENDPOINT", &hub.endpoint)
        .env("HF_HOME", tmp.path().join("m-dl/hf"))
        .env("HF_TOKEN", TOKEN)
        .env("REINCARNATE_HF_STREAM", "0")
        .env("REINCARNATE_CACHE", tmp.path().join("m-dl/cache"))
        .output()
        .unwrap();
    let out3 = ok(&o, "distill with streaming off");
    assert!(!out3.contains("byte ranges"), "{out3}");
    let in_hf_cache = files(&tmp.path().join("m-dl/hf"))
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .count();
    assert!(in_hf_cache >= 3, "{in_hf_cache} Parquet files downloaded");
    let moved = bytes_of(&hub.log.lock().unwrap()) - before;
    assert!(
        moved >= total,
        "{moved} bytes served for {total} bytes of data"
    );
    common::assert_same_tensors(&local, &downloaded, "model.safetensors");

    // The revision pinned by commit works the same; a machine without the token is refused,
    // and the error says what to set.
    let pinned = format!("hf://datasets/{REPO}@{COMMIT}");
    let o = run(
        &hub,
        &tmp.path().join("m3"),
        &["dataset", "validate", &pinned],
        true,
    );
    ok(&o, "validate the pinned revision");
    let o = run(
        &hub,
        &tmp.path().join("m4"),
        &["dataset", "validate", &url],
        false,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("HF_TOKEN") && err.contains(REPO), "{err}");
    assert!(hub.log.lock().unwrap().refused >= 1);
}

#[test]
fn a_data_file_the_hub_does_not_list_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    // The dataset in a folder of the repo: hf://datasets/ORG/NAME/sub.
    let repo = tmp.path().join("repo");
    let o = Command::new(BIN)
        .args(["collect", "--env", "dark_room", "--algo", "ppo"])
        .args(["--runs", "2", "--steps", "300", "--out"])
        .arg(repo.join("sub"))
        .output()
        .unwrap();
    ok(&o, "collect");
    let url = format!("hf://datasets/{REPO}/sub");
    let whole = serve(repo.clone(), None);
    let o = run(
        &whole,
        &tmp.path().join("m0"),
        &["dataset", "validate", &url],
        true,
    );
    ok(&o, "validate a dataset in a folder of the repo");
    let gone = "sub/runs/run-00001/data/part-00000.parquet";
    assert!(repo.join(gone).is_file());
    let hub = serve(repo, Some(gone));
    let o = run(&hub, tmp.path(), &["dataset", "validate", &url], true);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(gone) && err.contains(COMMIT), "{err}");
    // Streaming off (REINCARNATE_HF_STREAM=0): the same check through the download path.
    let o = Command::new(BIN)
        .args(["dataset", "validate", &url])
        .env("HF_ENDPOINT", &hub.endpoint)
        .env("HF_HOME", tmp.path().join("hf2"))
        .env("HF_TOKEN", TOKEN)
        .env("REINCARNATE_HF_STREAM", "0")
        .env("REINCARNATE_CACHE", tmp.path().join("cache2"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(gone), "{err}");
    assert!(
        !tmp.path().join("cache2/hf").exists(),
        "streamed with REINCARNATE_HF_STREAM=0"
    );
}

/// A Minari dataset on the Hub (Arrow storage: one file per episode, no Parquet) comes through
/// the streamed mirror whole and imports as the same transitions as the local folder.
#[test]
fn a_minari_dataset_on_the_hub_imports_through_the_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats/minari_arrow");
    let hub = serve(fixture.clone(), None);
    let (remote, local) = (tmp.path().join("remote"), tmp.path().join("local"));
    let url = format!("hf://datasets/{REPO}");
    let o = run(
        &hub,
        &tmp.path().join("machine"),
        &[
            "dataset",
            "import",
            "minari",
            &url,
            "--out",
            remote.to_str().unwrap(),
        ],
        true,
    );
    ok(&o, "import from the Hub");
    let o = run(
        &hub,
        &tmp.path().join("other"),
        &[
            "dataset",
            "import",
            "minari",
            fixture.to_str().unwrap(),
            "--out",
            local.to_str().unwrap(),
        ],
        true,
    );
    ok(&o, "import from the folder");
    let parquet = |d: &Path| -> Vec<(String, Vec<u8>)> {
        files(d)
            .into_iter()
            .filter(|f| f.ends_with(".parquet"))
            .map(|f| (f.clone(), std::fs::read(d.join(&f)).unwrap()))
            .collect()
    };
    let (a, b) = (parquet(&remote), parquet(&local));
    assert!(!a.is_empty());
    assert!(a == b, "the imported transitions differ");
    let mirror = tmp
        .path()
        .join(format!("machine/cache/hf/datasets/{REPO}/{COMMIT}"));
    assert!(mirror.join("data/0/part-0.arrow").is_file());
}
