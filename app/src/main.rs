//! Entry point of the wasm bundle: mounts the dashboard on the page.

fn main() {
    leptos::mount::mount_to_body(converge_app::App);
}
