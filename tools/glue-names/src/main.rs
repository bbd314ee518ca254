//! `glue-names DIR`: shortens the generated names shared by the wasm module in DIR
//! (`*_bg.wasm`) and its JS glue (the same name without `_bg`, `.js`), in place. Run by
//! `scripts/precompress` on Trunk's staging directory, before the glue is minified.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: glue-names DIR");
        return ExitCode::from(2);
    };
    match run(Path::new(&dir)) {
        Ok(summary) => {
            println!("glue-names: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("glue-names: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &Path) -> Result<String, String> {
    let wasm_path = only_module(dir)?;
    let js_path = PathBuf::from(wasm_path.to_string_lossy().replace("_bg.wasm", ".js"));
    let read_err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let wasm = std::fs::read(&wasm_path).map_err(|e| read_err(&wasm_path, e))?;
    let js = std::fs::read_to_string(&js_path).map_err(|e| read_err(&js_path, e))?;
    let renamed = converge_glue_names::rename(&wasm, &js).map_err(|e| e.to_string())?;
    std::fs::write(&wasm_path, &renamed.wasm).map_err(|e| read_err(&wasm_path, e))?;
    std::fs::write(&js_path, &renamed.js).map_err(|e| read_err(&js_path, e))?;
    Ok(format!(
        "{} names shortened; wasm {} → {} bytes, js {} → {} bytes",
        renamed.names.len(),
        wasm.len(),
        renamed.wasm.len(),
        js.len(),
        renamed.js.len()
    ))
}

fn only_module(dir: &Path) -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let modules: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("_bg.wasm"))
        .collect();
    match modules.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("no *_bg.wasm in {}", dir.display())),
        _ => Err(format!("more than one *_bg.wasm in {}", dir.display())),
    }
}
