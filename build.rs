//! With the `gym` feature, the binary embeds Python: record where its shared libpython lives
//! (an rpath), so that the binary runs without LD_LIBRARY_PATH when that directory is not a
//! system one (pyenv, conda, a home-built Python).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    if std::env::var_os("CARGO_FEATURE_GYM").is_none() {
        return;
    }
    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if !dir.is_empty() {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            }
        }
        _ => println!(
            "cargo:warning=feature `gym`: could not ask `{python}` for its library directory; \
             the binary may need LD_LIBRARY_PATH to find libpython"
        ),
    }
}
