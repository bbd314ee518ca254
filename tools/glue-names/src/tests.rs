use super::*;

const SET_ATTRIBUTE: &str = "__wbg_setAttribute_f75317b2b5cabfb4";
const INVOKE: &str = "wasm_bindgen_f1d7d887694c14bd___convert__closures_____invoke_______true_";

fn section(out: &mut Vec<u8>, id: u8, body: &[u8]) {
    out.push(id);
    write_leb(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// A module importing a function and a memory from the glue, exporting a function, a memory
/// and a global, with a custom section after them.
fn module(function_import: &str) -> Vec<u8> {
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    // One type: () -> ().
    section(&mut wasm, 1, &[1, 0x60, 0, 0]);
    let mut imports = vec![3];
    write_name(&mut imports, "./converge-app_bg.js");
    write_name(&mut imports, function_import);
    imports.extend_from_slice(&[0, 0]);
    write_name(&mut imports, "env");
    write_name(&mut imports, "__wbindgen_generic_0000000000000001");
    imports.extend_from_slice(&[0, 0]);
    write_name(&mut imports, "env");
    write_name(&mut imports, "mem");
    // A memory with a maximum: flags 1, min 17, max 300 (two LEB bytes).
    imports.extend_from_slice(&[2, 1, 17, 0xac, 0x02]);
    section(&mut wasm, 2, &imports);
    section(&mut wasm, 3, &[1, 0]);
    let mut exports = vec![3];
    write_name(&mut exports, INVOKE);
    exports.extend_from_slice(&[0, 2]);
    write_name(&mut exports, "memory");
    exports.extend_from_slice(&[2, 0]);
    write_name(&mut exports, "__wbindgen_start");
    exports.extend_from_slice(&[0, 2]);
    section(&mut wasm, 7, &exports);
    section(&mut wasm, 10, &[1, 2, 0, 0x0b]);
    let mut custom = Vec::new();
    write_name(&mut custom, "producers");
    custom.extend_from_slice(b"rest");
    section(&mut wasm, 0, &custom);
    wasm
}

/// The import and export names of a module, in order.
fn names_of(wasm: &[u8]) -> (Vec<String>, Vec<String>) {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut r = Reader { bytes: wasm, at: 8 };
    while !r.done() {
        let id = r.byte().unwrap();
        let len = r.leb().unwrap() as usize;
        let body = r.take(len).unwrap();
        let mut b = Reader { bytes: body, at: 0 };
        match id {
            2 => {
                for _ in 0..b.leb().unwrap() {
                    let module = b.name().unwrap();
                    imports.push(format!("{module}.{}", b.name().unwrap()));
                    b.skip_import_type().unwrap();
                }
                assert!(b.done(), "trailing bytes in the import section");
            }
            7 => {
                for _ in 0..b.leb().unwrap() {
                    exports.push(b.name().unwrap().to_owned());
                    b.byte().unwrap();
                    b.leb().unwrap();
                }
                assert!(b.done(), "trailing bytes in the export section");
            }
            _ => {}
        }
    }
    (imports, exports)
}

const GLUE: &str = "const i={__wbg_setAttribute_f75317b2b5cabfb4:function(e,n){e.setAttribute(n)},\
    __wbindgen_generic_0000000000000001:function(){}};\
    function n(e){A.wasm_bindgen_f1d7d887694c14bd___convert__closures_____invoke_______true_(e)}\
    A.__wbindgen_start();A.memory.buffer;\
    const keep='__wbg_setAttribute_f75317b2b5cabfb4x';";

#[test]
fn generated_names_are_renamed_in_both_files_and_nothing_else() {
    let r = rename(&module(SET_ATTRIBUTE), GLUE).unwrap();
    let (imports, exports) = names_of(&r.wasm);
    assert_eq!(
        imports,
        ["./converge-app_bg.js.$0", "env.$1", "env.mem"],
        "module names and ungenerated names stay"
    );
    assert_eq!(exports, ["$2", "memory", "__wbindgen_start"]);
    assert_eq!(r.names.len(), 3);
    assert!(
        r.js.contains("{$0:function(e,n){e.setAttribute(n)},"),
        "{}",
        r.js
    );
    assert!(r.js.contains("$1:function(){}"), "{}", r.js);
    assert!(r.js.contains("function n(e){A.$2(e)}"), "{}", r.js);
    assert!(
        r.js.contains("A.__wbindgen_start();A.memory.buffer"),
        "{}",
        r.js
    );
    // Part of a longer identifier: not the same name.
    assert!(
        r.js.contains("'__wbg_setAttribute_f75317b2b5cabfb4x'"),
        "{}",
        r.js
    );
    // The sections after the rewritten ones are intact, and the module got smaller.
    assert!(r.wasm.ends_with(b"producersrest"));
    assert!(r.wasm.len() < module(SET_ATTRIBUTE).len());
}

#[test]
fn a_glue_that_does_not_provide_an_import_is_refused() {
    let other = "__wbg_removeAttribute_735f25a801a701e1";
    assert_eq!(
        rename(&module(other), GLUE).unwrap_err(),
        Error::NotInGlue(other.to_owned())
    );
}

#[test]
fn broken_binaries_are_refused() {
    assert_eq!(rename(b"\0asm\x02\0\0\0", "").unwrap_err(), Error::NotWasm);
    let wasm = module(SET_ATTRIBUTE);
    for cut in [9, 20, wasm.len() - 1] {
        assert_eq!(
            rename(&wasm[..cut], GLUE).unwrap_err(),
            Error::Truncated,
            "cut at {cut}"
        );
    }
}

#[test]
fn limits_it_cannot_skip_are_refused_rather_than_misread() {
    let mut wasm = module(SET_ATTRIBUTE);
    // The memory import's limits flags (1: a maximum) become 0x09 (custom page size).
    let at = wasm
        .windows(5)
        .position(|w| w == [2, 1, 17, 0xac, 0x02])
        .unwrap();
    wasm[at + 1] = 0x09;
    assert_eq!(rename(&wasm, GLUE).unwrap_err(), Error::UnknownLimits(0x09));
}

#[test]
fn only_hashed_names_count_as_generated() {
    for name in [
        SET_ATTRIBUTE,
        INVOKE,
        "intounderlyingsource_pull_58a9338f50bce61c",
        "__wbindgen_generic_0000000000000006",
    ] {
        assert!(is_generated(name), "{name}");
    }
    for name in [
        "memory",
        "__wbindgen_start",
        "__wbindgen_malloc",
        "_f75317b2b5cabfb4",
        "__wbg_set_f75317b2b5cabfb",
        "__wbg_set_f75317b2b5cabfbz",
        "wasm_bindgen_f1d7d887694c14bd__x",
    ] {
        assert!(!is_generated(name), "{name}");
    }
}

#[test]
fn short_names_are_distinct() {
    let names: std::collections::HashSet<String> = (0..5000).map(short_name).collect();
    assert_eq!(names.len(), 5000);
    assert_eq!(short_name(0), "$0");
    assert_eq!(short_name(35), "$z");
    assert_eq!(short_name(36), "$10");
}
