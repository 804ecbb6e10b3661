// Generating the libbpf-cargo skeleton of the BPF object, shared by this crate's build script
// (`build-bpf` feature) and `cargo xtask codegen` (which checks in `src/skel.rs`): both include
// this file with `#[path]`, so the two skeletons are made the same way.
//
// libbpf-cargo embeds the object in the skeleton (`static DATA`). Here the skeleton takes its
// bytes from `SCX_USERLAND_BPF_OBJECT`, the object this build uses (set by the build script),
// so the checked-in skeleton can never load a stale copy.

use std::path::Path;

/// The line that replaces libbpf-cargo's `static DATA: [u8; N] = …;`.
const DATA_LINE: &str =
    "static DATA: [u8; crate::OBJECT.len()] = *include_bytes!(env!(\"SCX_USERLAND_BPF_OBJECT\"));";

/// The skeleton of the object at `obj` (named after its file: `userland.bpf.o` gives
/// `UserlandSkel`), with `DATA` read from `SCX_USERLAND_BPF_OBJECT` at compile time.
/// `tmp` is a scratch file for libbpf-cargo's output.
pub fn generate_skeleton(obj: &Path, tmp: &Path) -> Result<String, String> {
    libbpf_cargo::SkeletonBuilder::new()
        .obj(obj)
        .reference_obj(true)
        .generate(tmp)
        .map_err(|e| format!("generating the skeleton of {}: {e:#}", obj.display()))?;
    let text = std::fs::read_to_string(tmp)
        .map_err(|e| format!("reading the skeleton {}: {e}", tmp.display()))?;
    let _ = std::fs::remove_file(tmp);

    // `static DATA: [u8; N] = *include_bytes!("<path>");`, possibly wrapped by rustfmt.
    const START: &str = "static DATA: [u8; ";
    let found = text.matches(START).count();
    let start = text.find(START).filter(|_| found == 1).ok_or_else(|| {
        format!(
            "the skeleton of {} has {found} `static DATA` items, expected 1 \
             (did libbpf-cargo change its output?)",
            obj.display()
        )
    })?;
    let end = data_item_end(&text[start..])
        .map(|len| start + len)
        .ok_or_else(|| {
            format!(
                "the skeleton of {} does not `include_bytes!` its object",
                obj.display()
            )
        })?;
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    out.push_str(DATA_LINE);
    out.push_str(&text[end..]);
    Ok(out)
}

/// Length of `static DATA: [u8; N] = *include_bytes!("<path>");` at the start of `item`,
/// whatever the white space.
fn data_item_end(item: &str) -> Option<usize> {
    let after_macro = item.find("include_bytes!(")? + "include_bytes!(".len();
    let rest = item[after_macro..].trim_start();
    let path = rest.strip_prefix('"')?;
    let rest = path[path.find('"')? + 1..].trim_start();
    let rest = rest.strip_prefix(')')?.trim_start();
    let rest = rest.strip_prefix(';')?;
    Some(item.len() - rest.len())
}
