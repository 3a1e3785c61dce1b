//! The configs shipped in the repository stay valid.

use std::path::Path;

fn check(path: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if let Err(e) = cutover::config::load(&path) {
        panic!("{} is invalid:\n{e}", path.display());
    }
}

#[test]
fn root_example_config_is_valid() {
    check("proxy.toml");
}
