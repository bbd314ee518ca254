//! A fuzzing harness over the real router: arbitrary requests, as every kind of caller,
//! must be answered without a panic and without a 5xx, within a bound, and — under
//! `/api` — with a JSON `{"error": …}` body for every 4xx and `Cache-Control: no-store`
//! on every answer.
//!
//! One app, one set of sessions (each principal signs in once: argon2 is slow) and one
//! proptest [`TestRunner`] serve every case. Knobs, all optional:
//!
//! - `CONVERGE_FUZZ_CASES=20000` — how many cases (default [`DEFAULT_CASES`]);
//! - `CONVERGE_FUZZ_SEED=<u64>` — replay a run's requests (the seed is printed; the
//!   server's own state — throttle windows, sessions, tokens made — is not replayed);
//! - `CONVERGE_FUZZ_SHRINK=<check>` — stop at the first failure of that check (`panic`,
//!   `timeout`, `body`, `5xx`, `json`, `no-store`, or `any`) and let proptest shrink it.
//!
//! By default every case runs and every failure is collected: at the end the test prints
//! its statistics and fails with each distinct failure (check, method, route, status),
//! how often it happened, and its smallest example. Proptest's failure persistence is
//! off, so a run writes nothing into the repository (no `proptest-regressions/`).
//!
//! `CONVERGE_FUZZ_CASES=20000 cargo test --locked -p converge-server --test it fuzz -- --nocapture`

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use converge_server::routes::ROUTES;
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use tower::ServiceExt;

use crate::support::{ADMIN_PASSWORD, TENANT_PASSWORD, TestApp};

/// Cases of a default run: 4–5 ms each in a debug build on a shared two-core machine,
/// so 6–8 s; enough to meet the rarer findings (a panic needs 4 things at once) most times.
const DEFAULT_CASES: u32 = 1_500;
/// How long the router may take to answer, and then again to finish the body.
const ANSWER_BOUND: Duration = Duration::from_secs(5);
/// How long to wait for the first frame of a live event stream (it never ends).
const FIRST_FRAME_WAIT: Duration = Duration::from_millis(50);
/// How often to retry signing a principal in again while the throttle refuses it.
const SIGN_IN_RETRY: Duration = Duration::from_secs(5);
/// Bytes of a body shown in a failure.
const EXCERPT: usize = 300;

/// The principals the harness signs in: name, password (see `support::config_text`).
const ACCOUNTS: [(&str, &str); 4] = [
    ("admin", ADMIN_PASSWORD),
    ("otto", ADMIN_PASSWORD),
    ("kiosk", ADMIN_PASSWORD),
    ("tina", TENANT_PASSWORD),
];
const COOKIE: &str = "converge_session";
/// The server's own address, as the dashboard's requests name it.
const HOST: &str = "127.0.0.1:8080";
/// The name of the runtime's threads, where a handler's panic is recorded, not printed.
const WORKER_THREAD: &str = "converge-fuzz";

/// Where the last panic on a [`WORKER_THREAD`] happened.
static PANIC_AT: Mutex<Option<String>> = Mutex::new(None);

/// A handler's panic is a finding the report shows with its request: on the runtime's
/// threads the panic hook records where it happened and prints one line instead of a
/// backtrace (every other thread keeps the usual hook).
fn quiet_handler_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let usual = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(WORKER_THREAD) {
                return usual(info);
            }
            let at = info
                .location()
                .map_or_else(|| "(unknown place)".to_owned(), ToString::to_string);
            eprintln!("fuzz: a handler panicked at {at} (recorded for the report)");
            *PANIC_AT
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(at);
        }));
    });
}

#[test]
fn arbitrary_requests_as_any_caller_get_a_bounded_well_formed_answer() {
    let cases = env_number("CONVERGE_FUZZ_CASES")
        .map_or(DEFAULT_CASES, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let seed = env_number("CONVERGE_FUZZ_SEED").unwrap_or_else(fresh_seed);
    let shrink = std::env::var("CONVERGE_FUZZ_SHRINK").ok();
    if let Some(wanted) = &shrink {
        let keys: Vec<&str> = Check::ALL.iter().map(|c| c.key()).chain(["any"]).collect();
        assert!(
            keys.contains(&wanted.as_str()),
            "CONVERGE_FUZZ_SHRINK={wanted:?}: use one of {keys:?}"
        );
    }
    quiet_handler_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(WORKER_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let setup = Instant::now();
    let fuzz = runtime.block_on(Fuzz::start(shrink));
    eprintln!(
        "fuzz: {cases} cases, seed {seed} (CONVERGE_FUZZ_SEED={seed} replays the requests); \
         signed in {} principals in {:.1?}",
        ACCOUNTS.len(),
        setup.elapsed()
    );

    let mut runner = TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        // Nothing written into the repository; a failure prints its seed instead.
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    });
    let started = Instant::now();
    let result = runner.run(&case(), |case| runtime.block_on(fuzz.run(&case)));
    let elapsed = started.elapsed();

    let report = fuzz.report(seed, elapsed);
    eprintln!("{report}");
    runtime.block_on(async move { drop(fuzz) });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, _)) => {
            panic!("smallest failing case after shrinking (statistics above):\n{reason}")
        }
        Err(TestError::Abort(reason)) => panic!("proptest gave up: {reason}"),
    }
    assert!(
        report.failures.is_empty(),
        "fuzzing found {} distinct failures:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// What one case is
// ---------------------------------------------------------------------------------------

/// One arbitrary request.
#[derive(Debug, Clone)]
struct Case {
    who: Who,
    method: MethodPick,
    target: Target,
    /// Already encoded (may hold raw `%` on purpose); `None`: no `?` at all.
    query: Option<String>,
    /// Name and raw value; values `HeaderValue` refuses are skipped (and counted).
    headers: Vec<(&'static str, Vec<u8>)>,
    body: BodySpec,
    /// The peer address the request appears to come from.
    client: IpAddr,
}

/// Who sends the request: the `Cookie` header.
#[derive(Debug, Clone)]
enum Who {
    Nobody,
    /// One of [`ACCOUNTS`], with its live session.
    Account(usize),
    /// A session that was signed out: a real id the store has forgotten.
    Ended,
    /// `converge_session=<junk>`.
    Garbage(Vec<u8>),
    /// A well-formed session id that no sign-in made.
    Forged(String),
    /// Two session cookies: a forged one, then an account's.
    Doubled(String, usize),
}

#[derive(Debug, Clone)]
enum MethodPick {
    /// The method the route is registered with (GET for a path that is no route).
    OfRoute,
    Named(&'static str),
    Odd(String),
}

#[derive(Debug, Clone)]
enum Target {
    /// `/api` + `ROUTES[index]`, every `{param}` replaced by `param`.
    Route { index: usize, param: Segment },
    /// `/api` + these segments: mostly no route.
    Api(Vec<Segment>),
    /// A path outside `/api`, already encoded.
    Elsewhere(String),
}

/// One path segment.
#[derive(Debug, Clone)]
enum Segment {
    /// Any text, percent-encoded into the path.
    Text(String),
    /// Put into the path as-is: broken or surprising escapes (`%FF`, `%ZZ`, `..`).
    Raw(&'static str),
}

#[derive(Debug, Clone)]
enum BodySpec {
    Empty,
    Bytes(Vec<u8>),
    /// `len` pseudo-random bytes: around the API's 64 KiB body limit.
    Big {
        len: usize,
        seed: u64,
    },
    Json(J),
    /// `[[[[…` or `{"a":{"a":…` this deep, never closed.
    Deep {
        depth: usize,
        objects: bool,
    },
}

/// JSON as text, so that numbers can be anything a client might send (`1e999`,
/// `18446744073709551616`), not only what `serde_json::Value` can hold.
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    /// The number's text, sent verbatim (not always valid JSON, e.g. `NaN`).
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

/// The request shape a route reads, to send it mostly its own kind of body.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Login,
    Start,
    Lever,
    KioskLabel,
    KioskSignIn,
}

// ---------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------

fn case() -> impl Strategy<Value = Case> {
    target()
        .prop_flat_map(|target| {
            let shape = target.shape();
            (
                Just(target),
                who(),
                method(),
                query(),
                headers(),
                body(shape),
                client(),
            )
        })
        .prop_map(|(target, who, method, query, headers, body, client)| Case {
            who,
            method,
            target,
            query,
            headers,
            body,
            client,
        })
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        2 => Just(Who::Nobody),
        8 => (0..ACCOUNTS.len()).prop_map(Who::Account),
        1 => Just(Who::Ended),
        1 => junk_bytes().prop_map(Who::Garbage),
        1 => session_id().prop_map(Who::Forged),
        1 => (session_id(), 0..ACCOUNTS.len()).prop_map(|(id, i)| Who::Doubled(id, i)),
    ]
}

/// What a tower-sessions id looks like: 22 characters of URL-safe base64.
fn session_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{22}"
}

fn method() -> impl Strategy<Value = MethodPick> {
    prop_oneof![
        12 => Just(MethodPick::OfRoute),
        7 => select(&["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"][..])
            .prop_map(MethodPick::Named),
        1 => prop_oneof![
            select(&["FOO", "TRACE", "CONNECT", "PROPFIND", "get", "M-SEARCH"][..])
                .prop_map(str::to_owned),
            "[A-Z]{1,12}",
        ]
        .prop_map(MethodPick::Odd),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        15 => (0..ROUTES.len(), segment()).prop_map(|(index, param)| Target::Route { index, param }),
        3 => prop::collection::vec(api_segment(), 0..4).prop_map(Target::Api),
        2 => prop_oneof![
            select(OTHER_PATHS).prop_map(str::to_owned),
            text().prop_map(|t| format!("/{}", encode(&t))),
        ]
        .prop_map(Target::Elsewhere),
    ]
}

const OTHER_PATHS: &[&str] = &[
    "/",
    "/kiosk",
    "/login",
    "/fleet",
    "/migrations/7",
    "/x/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/..%2f..%2fetc%2fpasswd",
    "/index.html",
    "/favicon.svg",
    "/missing.js",
    "/converge-app-0123456789abcdef.js",
    "/apix",
    "/API/health",
    "/api.json",
    "/%00",
    "/%FF",
    "/%ZZ",
];

/// A path parameter: empty, 4 KiB, `..`, `%00`, numbers past every integer type, …
fn segment() -> impl Strategy<Value = Segment> {
    prop_oneof![
        6 => text().prop_map(Segment::Text),
        2 => uuid().prop_map(Segment::Text),
        1 => any::<u64>().prop_map(|n| Segment::Text(n.to_string())),
        3 => select(RAW_SEGMENTS).prop_map(Segment::Raw),
    ]
}

const RAW_SEGMENTS: &[&str] = &[
    "%00",
    "%ZZ",
    "%FF",
    "%C3%28",
    "%E2%82",
    "%F0%9F%98%80",
    "%2F",
    "%2e%2e",
    "..",
    ".",
    "%",
    "a%20b",
    "+",
    ";x=1",
    "@",
    ":",
];

fn api_segment() -> impl Strategy<Value = Segment> {
    prop_oneof![
        2 => select(&[
            "migrations", "kiosk-tokens", "kiosk", "session", "tenant", "vms", "abort",
            "events", "login", "health", "audit", "", "..", "API",
        ][..])
        .prop_map(|w| Segment::Text(w.to_owned())),
        1 => segment(),
    ]
}

const SPECIAL_TEXTS: &[&str] = &[
    "",
    " ",
    ".",
    "..",
    "../../etc/passwd",
    "%00",
    "%ZZ",
    "\u{0}",
    "-1",
    "0",
    "1",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "1e999",
    "NaN",
    "null",
    "é中😀",
    "\u{202e}gpj.exe",
    "/",
    "?",
    "#",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
];

/// Text for a parameter or a JSON string.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(SPECIAL_TEXTS).prop_map(str::to_owned),
        3 => "[a-z0-9-]{1,16}",
        3 => ".{0,24}",
        1 => Just("a".repeat(4096)),
        1 => (1usize..600).prop_map(|n| "é".repeat(n)),
    ]
}

/// Real-looking UUIDs: VM ids and migration ids have this form.
fn uuid() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| {
        let hex = format!("{n:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    })
}

fn query() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        8 => Just(None),
        5 => select(KNOWN_QUERIES).prop_map(|q| Some(q.to_owned())),
        3 => prop::collection::vec(
            (
                prop_oneof![
                    3 => select(&["limit", "before", "before_ms", "x", ""][..]).prop_map(str::to_owned),
                    1 => text(),
                ],
                prop_oneof![number().prop_map(|n| n.text()), text()],
            ),
            1..4,
        )
        .prop_map(|pairs| {
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
                .collect();
            Some(pairs.join("&"))
        }),
        1 => prop::collection::vec(any::<u8>(), 1800..2300).prop_map(|junk| Some(encode_query(&junk))),
    ]
}

const KNOWN_QUERIES: &[&str] = &[
    "",
    "limit=-1",
    "limit=abc",
    "limit=0",
    "limit=1",
    "limit=500",
    "limit=501",
    "limit=",
    "limit=1e3",
    "limit=+5",
    "limit=%00",
    "limit=9223372036854775807",
    "limit=9223372036854775808",
    "before_ms=99999999999999999999",
    "before_ms=-9223372036854775808",
    "before_ms=0",
    "before=%FF",
    "before=-1",
    "before=9223372036854775807",
    "limit=1&limit=2",
    "limit=10&before=5",
    "limit=10&before_ms=1",
    "x=1",
    "=",
    "&&",
    "%",
    "%ZZ=1",
];

fn headers() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    (
        host(),
        prop::option::weighted(0.3, header_value(ORIGINS)),
        prop::option::weighted(0.3, header_value(FETCH_SITES)),
        prop::option::weighted(0.4, last_event_id()),
        prop::option::weighted(0.2, forwarded_for()),
        content_type(),
    )
        .prop_map(|(host, origin, site, last, forwarded, content_type)| {
            [
                ("host", host),
                ("origin", origin),
                ("sec-fetch-site", site),
                ("last-event-id", last),
                ("x-forwarded-for", forwarded),
                ("content-type", content_type),
            ]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect()
        })
}

/// Mostly this server's own `Host`, as every browser and curl send one; sometimes none,
/// another's, or junk.
fn host() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        7 => Just(Some(HOST.as_bytes().to_vec())),
        1 => Just(None),
        2 => header_value(HOSTS).prop_map(Some),
    ]
}

const HOSTS: &[&str] = &[
    "127.0.0.1:8080",
    "127.0.0.1:8080",
    "evil.test:8080",
    "LOCALHOST:8080",
    "[::1]:8080",
    "127.0.0.1:99999",
    "",
    "a b",
];
const ORIGINS: &[&str] = &[
    "http://127.0.0.1:8080",
    "http://127.0.0.1:8080",
    "http://evil.test:8080",
    "null",
    "https://127.0.0.1:8080",
    "http://127.0.0.1:8081",
    "",
    "file://",
];
const FETCH_SITES: &[&str] = &[
    "same-origin",
    "cross-site",
    "same-site",
    "none",
    "",
    "SAME-ORIGIN",
];
const CONTENT_TYPES: &[&str] = &[
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/json+junk",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
];

/// A header value from `known`, or junk.
fn header_value(known: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => select(known).prop_map(|v| v.as_bytes().to_vec()),
        1 => junk_bytes(),
    ]
}

/// Bytes a header value may hold, non-ASCII included (so `to_str` fails on them).
fn junk_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![8 => 0x20u8..0x7f, 1 => 0x80u8..=0xff, 1 => Just(b'\t')],
        0..48,
    )
}

/// Often `u64::MAX`: the one value that a resume arithmetic (`last + 1`) cannot take.
fn last_event_id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(b"18446744073709551615".to_vec()),
        3 => select(&["0", "1", "18446744073709551614", "-5", " 3 ", "1e3", ""][..])
            .prop_map(|v| v.as_bytes().to_vec()),
        1 => Just("9".repeat(1024).into_bytes()),
        1 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        1 => junk_bytes(),
    ]
}

fn forwarded_for() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => select(&[
            "10.0.0.1",
            "10.0.0.1, 192.168.1.1",
            "::1",
            "2001:db8::1, 10.0.0.2",
            "unknown",
            "1.2.3.4.5",
            ", , ,",
            "[::1]:80",
        ][..])
        .prop_map(|v| v.as_bytes().to_vec()),
        2 => prop::collection::vec(any_ip(), 1..6).prop_map(|ips| {
            let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
            ips.join(", ").into_bytes()
        }),
        1 => junk_bytes(),
    ]
}

fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        11 => Just(Some(b"application/json".to_vec())),
        3 => header_value(CONTENT_TYPES).prop_map(Some),
        4 => Just(None),
    ]
}

fn client() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        6 => Just(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        1 => Just(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        3 => any_ip(),
    ]
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u16; 8]>().prop_map(|s| IpAddr::V6(Ipv6Addr::from(s))),
    ]
}

/// A body: mostly the request shape of the route (values mutated), sometimes another's,
/// random bytes, arbitrary JSON, JSON nested too deep, or more than the 64 KiB limit.
fn body(shape: Option<Shape>) -> BoxedStrategy<BodySpec> {
    let own = match shape {
        Some(shape) => shaped(shape),
        None => any_shape(),
    };
    prop_oneof![
        8 => own.prop_map(BodySpec::Json),
        2 => any_shape().prop_map(BodySpec::Json),
        3 => Just(BodySpec::Empty),
        2 => prop::collection::vec(any::<u8>(), 0..512).prop_map(BodySpec::Bytes),
        2 => json_value().prop_map(BodySpec::Json),
        1 => (100usize..=300, any::<bool>())
            .prop_map(|(depth, objects)| BodySpec::Deep { depth, objects }),
        1 => (60_000usize..72_000, any::<u64>()).prop_map(|(len, seed)| BodySpec::Big { len, seed }),
    ]
    .boxed()
}

fn any_shape() -> BoxedStrategy<J> {
    prop_oneof![
        shaped(Shape::Login),
        shaped(Shape::Start),
        shaped(Shape::Lever),
        shaped(Shape::KioskLabel),
        shaped(Shape::KioskSignIn),
    ]
    .boxed()
}

fn shaped(shape: Shape) -> BoxedStrategy<J> {
    match shape {
        Shape::Login => login().boxed(),
        Shape::Start => start().boxed(),
        Shape::Lever => lever().boxed(),
        Shape::KioskLabel => (field("label", 0.9, string_value()), extra_field())
            .prop_map(|(label, extra)| obj([label, extra]))
            .boxed(),
        Shape::KioskSignIn => (
            field(
                "token",
                0.9,
                prop_oneof![
                    "[0-9a-f]{64}".prop_map(J::Str),
                    "[A-Za-z0-9_-]{43}".prop_map(J::Str),
                    string_value(),
                ],
            ),
            extra_field(),
        )
            .prop_map(|(token, extra)| obj([token, extra]))
            .boxed(),
    }
}

/// `LoginRequest {username, password}`: real names and passwords often, so that some
/// sign-ins succeed and some fail (and lock the throttle: 429 is a fine answer).
fn login() -> impl Strategy<Value = J> {
    (
        field(
            "username",
            0.9,
            prop_oneof![
                4 => select(&["admin", "otto", "kiosk", "tina", "nobody", "ADMIN", "admin "][..])
                    .prop_map(J::str),
                2 => string_value(),
            ],
        ),
        field(
            "password",
            0.9,
            prop_oneof![
                4 => select(&[ADMIN_PASSWORD, TENANT_PASSWORD, "wrong", ""][..]).prop_map(J::str),
                1 => Just(J::Str("p".repeat(2000))),
                2 => string_value(),
            ],
        ),
        extra_field(),
    )
        .prop_map(|(username, password, extra)| obj([username, password, extra]))
}

/// `StartMigration {vm_uuid, destination, preset?, settings?}`.
fn start() -> impl Strategy<Value = J> {
    (
        field(
            "vm_uuid",
            0.9,
            prop_oneof![uuid().prop_map(J::Str), string_value()],
        ),
        field(
            "destination",
            0.9,
            prop_oneof![
                select(&["a", "b", "host-b", "nowhere", ""][..]).prop_map(J::str),
                string_value(),
            ],
        ),
        field(
            "preset",
            0.5,
            prop_oneof![
                select(
                    &[
                        "converge",
                        "converge-safe",
                        "nova",
                        "ovirt-minimal-downtime",
                        "proxmox",
                        "nope",
                    ][..]
                )
                .prop_map(J::str),
                string_value(),
            ],
        ),
        field("settings", 0.6, settings()),
        extra_field(),
    )
        .prop_map(|(vm, destination, preset, settings, extra)| {
            obj([vm, destination, preset, settings, extra])
        })
}

/// `MigrationSettings`, every field optional, numbers at their extremes.
fn settings() -> impl Strategy<Value = J> {
    let auto_converge = prop_oneof![
        3 => (
            field("initial_pct", 0.9, number_value()),
            field("increment_pct", 0.9, number_value()),
        )
            .prop_map(|(initial, increment)| obj([initial, increment])),
        1 => mutant(),
    ];
    let capabilities = (
        field("xbzrle_cache_bytes", 0.5, number_value()),
        field("auto_converge", 0.5, auto_converge),
        field("postcopy", 0.5, bool_value()),
        field("parallel_connections", 0.5, number_value()),
        extra_field(),
    )
        .prop_map(|(xbzrle, auto, postcopy, parallel, extra)| {
            obj([xbzrle, auto, postcopy, parallel, extra])
        });
    let downtime_steps = (
        field("start_ms", 0.9, number_value()),
        field("max_ms", 0.9, number_value()),
        field(
            "growth",
            0.9,
            prop_oneof![
                select(&["linear", "double", "triple"][..]).prop_map(J::str),
                mutant()
            ],
        ),
        field("steps", 0.5, number_value()),
        field("every_s", 0.5, number_value()),
        field("every_s_per_gib", 0.3, number_value()),
        field("every_iterations", 0.3, number_value()),
    )
        .prop_map(|(a, b, c, d, e, f, g)| obj([a, b, c, d, e, f, g]));
    let deadline = (
        field("completion_s_per_gib", 0.5, number_value()),
        field("completion_max_s", 0.5, number_value()),
        field("stall_s", 0.5, number_value()),
        field(
            "action",
            0.5,
            prop_oneof![
                select(&["abort", "post_copy", "pause", "explode"][..]).prop_map(J::str),
                mutant()
            ],
        ),
    )
        .prop_map(|(a, b, c, d)| obj([a, b, c, d]));
    (
        field("capabilities", 0.5, capabilities),
        field("bandwidth_mib_s", 0.5, number_value()),
        field("downtime_limit_ms", 0.5, number_value()),
        field("downtime_steps", 0.4, downtime_steps),
        field("deadline", 0.4, deadline),
        field("adaptive", 0.3, bool_value()),
        extra_field(),
    )
        .prop_map(|(a, b, c, d, e, f, g)| obj([a, b, c, d, e, f, g]))
}

/// `LeverChange`: `{"lever":"downtime_limit","ms":N}` and its siblings, keys mixed up.
fn lever() -> impl Strategy<Value = J> {
    (
        field(
            "lever",
            0.9,
            prop_oneof![
                4 => select(&["downtime_limit", "bandwidth", "xbzrle_cache", "post_copy", "warp"][..])
                    .prop_map(J::str),
                1 => mutant(),
            ],
        ),
        prop::option::weighted(
            0.8,
            (
                select(&["ms", "mib_s", "bytes", "value"][..]),
                number_value(),
            )
                .prop_map(|(key, value)| (key.to_owned(), value)),
        ),
        extra_field(),
    )
        .prop_map(|(lever, value, extra)| obj([lever, value, extra]))
}

/// `Some((name, value))` with probability `present`. Boxed, as are the other JSON
/// strategies: a debug build keeps the value trees of nested tuples unboxed on the stack,
/// and the settings' tuples overflowed the test thread's.
fn field(
    name: &'static str,
    present: f64,
    value: impl Strategy<Value = J> + 'static,
) -> BoxedStrategy<Option<(String, J)>> {
    prop::option::weighted(present, value.prop_map(move |v| (name.to_owned(), v))).boxed()
}

/// Now and then a field the type does not know, or one it knows, twice.
fn extra_field() -> impl Strategy<Value = Option<(String, J)>> {
    prop::option::weighted(
        0.1,
        (
            select(&["extra", "lever", "username", "label", "__proto__"][..]),
            json_value(),
        )
            .prop_map(|(key, value)| (key.to_owned(), value)),
    )
}

fn obj<const N: usize>(fields: [Option<(String, J)>; N]) -> J {
    J::Obj(fields.into_iter().flatten().collect())
}

const EXTREME_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "-0",
    "0.5",
    "1.0",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-18446744073709551616",
    "1e308",
    "-1e308",
    "1e999",
    "1e-999",
    "NaN",
    "Infinity",
    "01",
];

fn number() -> BoxedStrategy<J> {
    prop_oneof![
        4 => select(EXTREME_NUMBERS).prop_map(|n| J::Num(n.to_owned())),
        2 => (0u64..5000).prop_map(|n| J::Num(n.to_string())),
        1 => any::<u64>().prop_map(|n| J::Num(n.to_string())),
        1 => any::<i64>().prop_map(|n| J::Num(n.to_string())),
        1 => any::<f64>().prop_map(|n| J::Num(n.to_string())),
        1 => select(&["NaN", "1e999", "-1"][..]).prop_map(J::str),
    ]
    .boxed()
}

/// A value where the type wants a number: mostly a number, sometimes something else.
fn number_value() -> BoxedStrategy<J> {
    prop_oneof![6 => number(), 1 => mutant()].boxed()
}

fn bool_value() -> BoxedStrategy<J> {
    prop_oneof![3 => any::<bool>().prop_map(J::Bool), 1 => mutant()].boxed()
}

/// A value where the type wants a string: mostly a string (sometimes 70 KB of it).
fn string_value() -> BoxedStrategy<J> {
    prop_oneof![
        6 => text().prop_map(J::Str),
        1 => Just(J::Str("x".repeat(70_000))),
        2 => mutant(),
    ]
    .boxed()
}

/// Something of the wrong type.
fn mutant() -> BoxedStrategy<J> {
    prop_oneof![
        3 => number(),
        1 => Just(J::Null),
        1 => any::<bool>().prop_map(J::Bool),
        1 => Just(J::Arr(Vec::new())),
        1 => Just(J::Obj(Vec::new())),
        1 => text().prop_map(J::Str),
    ]
    .boxed()
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        number(),
        text().prop_map(J::Str),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
            prop::collection::vec((text(), inner), 0..6).prop_map(J::Obj),
        ]
    })
}

// ---------------------------------------------------------------------------------------
// Rendering a case into a request
// ---------------------------------------------------------------------------------------

impl J {
    fn str(text: &str) -> Self {
        Self::Str(text.to_owned())
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::Num(raw) => out.push_str(raw),
            Self::Str(s) => out.push_str(&serde_json::to_string(s).expect("a string")),
            Self::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Self::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).expect("a string"));
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

impl BodySpec {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Empty => Vec::new(),
            Self::Bytes(bytes) => bytes.clone(),
            Self::Big { len, seed } => {
                // xorshift64: cheap bytes without a 70 000-element strategy.
                let mut x = seed | 1;
                (0..*len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x.to_le_bytes()[0]
                    })
                    .collect()
            }
            Self::Json(json) => json.text().into_bytes(),
            Self::Deep { depth, objects } => {
                let open = if *objects { "{\"a\":" } else { "[" };
                open.repeat(*depth).into_bytes()
            }
        }
    }
}

impl Target {
    fn shape(&self) -> Option<Shape> {
        let Self::Route { index, .. } = self else {
            return None;
        };
        let route = ROUTES[*index];
        match (route.method, route.path) {
            ("POST", "/login") => Some(Shape::Login),
            ("POST", "/migrations") => Some(Shape::Start),
            ("PATCH", "/migrations/{id}") => Some(Shape::Lever),
            ("POST", "/kiosk-tokens") => Some(Shape::KioskLabel),
            ("POST", "/kiosk/session") => Some(Shape::KioskSignIn),
            _ => None,
        }
    }

    /// The path, encoded, and what it is for grouping failures.
    fn path(&self) -> (String, String) {
        match self {
            Self::Route { index, param } => {
                let route = ROUTES[*index];
                let mut path = String::from("/api");
                let mut rest = route.path;
                while let Some(open) = rest.find('{') {
                    let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
                    path.push_str(&rest[..open]);
                    path.push_str(&param.encoded());
                    rest = &rest[close..];
                }
                path.push_str(rest);
                (path, format!("/api{}", route.path))
            }
            Self::Api(segments) => {
                let mut path = String::from("/api");
                for segment in segments {
                    path.push('/');
                    path.push_str(&segment.encoded());
                }
                (path, "/api/… (arbitrary)".to_owned())
            }
            Self::Elsewhere(path) => (path.clone(), "non-API path".to_owned()),
        }
    }

    fn route_method(&self) -> &'static str {
        match self {
            Self::Route { index, .. } => ROUTES[*index].method,
            _ => "GET",
        }
    }
}

impl Segment {
    fn encoded(&self) -> String {
        match self {
            Self::Text(text) => encode(text),
            Self::Raw(raw) => (*raw).to_owned(),
        }
    }
}

/// Percent-encodes every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Junk for a query string: the bytes a URI allows there stay as they are (raw `%`
/// included, so escapes break), the others are percent-encoded.
fn encode_query(junk: &[u8]) -> String {
    junk.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A request as sent, for failure messages.
#[derive(Debug, Clone)]
struct Sent {
    method: String,
    uri: String,
    path: String,
    /// How failures are grouped: `/api/migrations/{id}`, `non-API path`, …
    template: String,
    who: String,
    client: IpAddr,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Sent {
    fn is_api(&self) -> bool {
        self.path == "/api" || self.path.starts_with("/api/")
    }

    fn describe(&self) -> String {
        let mut text = format!(
            "  request: {} {}\n  as: {} from {}\n",
            self.method, self.uri, self.who, self.client
        );
        for (name, value) in &self.headers {
            text.push_str(&format!("  {name}: {value}\n"));
        }
        text.push_str(&format!("  body: {}\n", excerpt(&self.body)));
        text
    }
}

/// The first bytes of `bytes`, escaped, with the full length.
fn excerpt(bytes: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT)]);
    let more = if bytes.len() > EXCERPT { "…" } else { "" };
    format!("({} bytes) {shown:?}{more}", bytes.len())
}

// ---------------------------------------------------------------------------------------
// Running cases
// ---------------------------------------------------------------------------------------

/// An answer, read (for a live stream: its first frame at most).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    /// A `text/event-stream` 200, left open and dropped.
    streamed: bool,
}

impl Answer {
    fn describe(&self) -> String {
        let header = |name: header::HeaderName| {
            self.headers
                .get(&name)
                .map_or("(none)".to_owned(), |v| format!("{v:?}"))
        };
        format!(
            "  answer: {}\n  answer content-type: {}\n  answer cache-control: {}\n  answer body: {}{}\n",
            self.status,
            header(header::CONTENT_TYPE),
            header(header::CACHE_CONTROL),
            excerpt(&self.body),
            if self.streamed {
                " (a live stream: first frame only)"
            } else {
                ""
            },
        )
    }
}

/// What went wrong before there was an answer to check.
#[derive(Debug)]
enum Trouble {
    Panic(String),
    Timeout(&'static str),
    Body(String),
}

/// The checks, from the worst failure to the mildest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    NoPanic,
    InTime,
    BodyReadable,
    No5xx,
    ApiErrorIsJson,
    ApiNoStore,
}

impl Check {
    const ALL: [Self; 6] = [
        Self::NoPanic,
        Self::InTime,
        Self::BodyReadable,
        Self::No5xx,
        Self::ApiErrorIsJson,
        Self::ApiNoStore,
    ];

    /// The name `CONVERGE_FUZZ_SHRINK` takes.
    fn key(self) -> &'static str {
        match self {
            Self::NoPanic => "panic",
            Self::InTime => "timeout",
            Self::BodyReadable => "body",
            Self::No5xx => "5xx",
            Self::ApiErrorIsJson => "json",
            Self::ApiNoStore => "no-store",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::NoPanic => "no panic while answering",
            Self::InTime => "answered (head and body) within 5 s each",
            Self::BodyReadable => "the body can be read to its end",
            Self::No5xx => "no 5xx status",
            Self::ApiErrorIsJson => {
                "a 4xx under /api has a JSON body with a string `error` (HEAD: a JSON content type)"
            }
            Self::ApiNoStore => "every answer under /api carries `Cache-Control: no-store`",
        }
    }
}

/// One failed check of one case.
#[derive(Debug)]
struct Failure {
    check: Check,
    /// How distinct failures are told apart: method, route, status.
    signature: String,
    /// The whole story: what failed, the request, the answer.
    text: String,
}

/// A distinct failure: how often it happened, and its smallest example.
#[derive(Debug)]
struct Found {
    count: u64,
    example: String,
    example_size: usize,
    one_line: String,
}

#[derive(Debug, Default)]
struct Stats {
    cases: u64,
    /// Index 0: no answer (panic, timeout); 1–5: the status class.
    by_class: [u64; 6],
    by_status: BTreeMap<u16, u64>,
    streams: u64,
    skipped_headers: u64,
    invalid_uris: u64,
    /// Cases that used a principal whose session a case before had ended.
    ended_principal: u64,
    sign_ins_again: u64,
}

struct Fuzz {
    /// Keeps the database and its folder alive.
    _app: TestApp,
    /// The real router, without a fixed peer address: each request carries its own.
    router: Router,
    /// Each account's current session cookie (`name=value`).
    cookies: Mutex<[String; 4]>,
    /// Accounts whose session a case ended and that the throttle kept out: when the
    /// last attempt to sign them in again was.
    signed_out: Mutex<[Option<Instant>; 4]>,
    /// A cookie of a session that was signed out.
    ended_cookie: String,
    stats: Mutex<Stats>,
    found: Mutex<BTreeMap<(Check, String), Found>>,
    /// `CONVERGE_FUZZ_SHRINK`: the check a failure of which stops the run.
    shrink: Option<String>,
    shrinking: Mutex<Option<Check>>,
    /// Side-door sign-ins get fresh addresses, so the per-address throttle the cases
    /// fill up does not keep a principal out.
    side_door: Mutex<u32>,
}

impl Fuzz {
    async fn start(shrink: Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let dist = dir.path().join("dist");
        std::fs::create_dir(&dist).unwrap();
        std::fs::write(
            dist.join("index.html"),
            "<!doctype html><title>Converge</title><script>boot()</script>",
        )
        .unwrap();
        let app = TestApp::in_dir(Arc::new(dir), "").await;
        // Before any case can fail a sign-in and start the throttle.
        let mut cookies = Vec::new();
        for (name, password) in ACCOUNTS {
            cookies.push(app.login(name, password).await);
        }
        let cookies: [String; 4] = cookies.try_into().unwrap();
        let router = converge_server::router(app.state.clone());
        let mut fuzz = Self {
            _app: app,
            router,
            cookies: Mutex::new(cookies),
            signed_out: Mutex::new([None; 4]),
            ended_cookie: String::new(),
            stats: Mutex::new(Stats::default()),
            found: Mutex::new(BTreeMap::new()),
            shrink,
            shrinking: Mutex::new(None),
            side_door: Mutex::new(0),
        };
        let ended = fuzz
            .sign_in_side_door(ACCOUNTS[0])
            .await
            .expect("a fresh admin session");
        let reply = fuzz
            .send_simple(Method::POST, "/api/logout", &ended, None)
            .await;
        assert_eq!(reply.0, StatusCode::NO_CONTENT, "{}", reply.1);
        fuzz.ended_cookie = ended;
        fuzz
    }

    /// Runs one case: sends it, checks the answer, records what failed.
    async fn run(&self, case: &Case) -> Result<(), TestCaseError> {
        self.retry_sign_ins().await;
        let Some((request, sent)) = self.build(case) else {
            self.stats.lock().unwrap().invalid_uris += 1;
            return Ok(());
        };
        let outcome = exchange(self.router.clone(), request).await;
        let failures = check(&sent, &outcome);
        self.tally(case, &outcome);
        if let (Ok(answer), Some(account)) = (&outcome, case.who.account()) {
            let safe = matches!(sent.method.as_str(), "GET" | "HEAD" | "OPTIONS");
            if !safe && answer.status.is_success() {
                // A sign-out, or a sign-in over the cookie (a new id): is it still alive?
                self.keep_signed_in(account).await;
            }
        }
        self.record(&failures);
        let Some(wanted) = &self.shrink else {
            return Ok(());
        };
        let mut target = self.shrinking.lock().unwrap();
        for failure in &failures {
            let matches = target
                .map_or(wanted == "any" || wanted == failure.check.key(), |check| {
                    check == failure.check
                });
            if matches {
                *target = Some(failure.check);
                return Err(TestCaseError::fail(failure.text.clone()));
            }
        }
        Ok(())
    }

    /// The request for `case`, or `None` when its URI is not one `http` accepts.
    fn build(&self, case: &Case) -> Option<(Request<Body>, Sent)> {
        let (path, template) = case.target.path();
        let uri = match &case.query {
            Some(query) => format!("{path}?{query}"),
            None => path.clone(),
        };
        let method = match &case.method {
            MethodPick::OfRoute => case.target.route_method().to_owned(),
            MethodPick::Named(name) => (*name).to_owned(),
            MethodPick::Odd(name) => name.clone(),
        };
        let (cookie, who) = self.cookie(&case.who);
        let body = case.body.bytes();
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).ok()?)
            .uri(&uri)
            .body(Body::from(body.clone()))
            .ok()?;
        let mut headers: Vec<(&'static str, Vec<u8>)> = case.headers.clone();
        if let Some(cookie) = cookie {
            headers.push(("cookie", cookie));
        }
        let mut shown = Vec::new();
        for (name, value) in headers {
            match HeaderValue::from_bytes(&value) {
                Ok(value) => {
                    shown.push((name.to_owned(), format!("{value:?}")));
                    request
                        .headers_mut()
                        .append(HeaderName::from_static(name), value);
                }
                Err(_) => self.stats.lock().unwrap().skipped_headers += 1,
            }
        }
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(case.client, 40_000)));
        let sent = Sent {
            path: request.uri().path().to_owned(),
            method,
            uri,
            template,
            who,
            client: case.client,
            headers: shown,
            body,
        };
        Some((request, sent))
    }

    /// The `Cookie` header for `who`, and who that is in words.
    fn cookie(&self, who: &Who) -> (Option<Vec<u8>>, String) {
        let cookies = self.cookies.lock().unwrap();
        let signed_out = self.signed_out.lock().unwrap();
        let account = |i: usize| {
            let state = if signed_out[i].is_some() {
                " (its session ended by an earlier case)"
            } else {
                ""
            };
            format!("{}{state}", ACCOUNTS[i].0)
        };
        match who {
            Who::Nobody => (None, "nobody (no cookie)".to_owned()),
            Who::Account(i) => (Some(cookies[*i].clone().into_bytes()), account(*i)),
            Who::Ended => (
                Some(self.ended_cookie.clone().into_bytes()),
                "a signed-out session".to_owned(),
            ),
            Who::Garbage(junk) => {
                let mut value = format!("{COOKIE}=").into_bytes();
                value.extend_from_slice(junk);
                (Some(value), "a garbage session cookie".to_owned())
            }
            Who::Forged(id) => (
                Some(format!("{COOKIE}={id}").into_bytes()),
                "a forged session id".to_owned(),
            ),
            Who::Doubled(id, i) => (
                Some(format!("{COOKIE}={id}; {}", cookies[*i]).into_bytes()),
                format!("a forged session cookie, then {}'s", account(*i)),
            ),
        }
    }

    fn tally(&self, case: &Case, outcome: &Result<Answer, Trouble>) {
        let mut stats = self.stats.lock().unwrap();
        stats.cases += 1;
        match outcome {
            Ok(answer) => {
                let class = usize::from(answer.status.as_u16() / 100).clamp(1, 5);
                stats.by_class[class] += 1;
                *stats.by_status.entry(answer.status.as_u16()).or_default() += 1;
                if answer.streamed {
                    stats.streams += 1;
                }
            }
            Err(_) => stats.by_class[0] += 1,
        }
        if let Some(i) = case.who.account()
            && self.signed_out.lock().unwrap()[i].is_some()
        {
            stats.ended_principal += 1;
        }
    }

    fn record(&self, failures: &[Failure]) {
        let mut found = self.found.lock().unwrap();
        for failure in failures {
            let size = failure.text.len();
            let one_line = one_line(&failure.text);
            let entry = found
                .entry((failure.check, failure.signature.clone()))
                .or_insert_with(|| Found {
                    count: 0,
                    example: failure.text.clone(),
                    example_size: size,
                    one_line: one_line.clone(),
                });
            entry.count += 1;
            if size < entry.example_size {
                entry.example = failure.text.clone();
                entry.example_size = size;
                entry.one_line = one_line;
            }
        }
    }

    /// After a state-changing 2xx as `account`: if its session is gone, sign in again.
    async fn keep_signed_in(&self, account: usize) {
        let cookie = self.cookies.lock().unwrap()[account].clone();
        let (status, _) = self
            .send_simple(Method::GET, "/api/me", &cookie, None)
            .await;
        if status != StatusCode::OK {
            self.sign_in_again(account).await;
        }
    }

    /// Retries the accounts the throttle kept out, at most every [`SIGN_IN_RETRY`]; until
    /// one is back, its cases go out with the dead cookie (and are counted).
    async fn retry_sign_ins(&self) {
        for account in 0..ACCOUNTS.len() {
            let due = self.signed_out.lock().unwrap()[account]
                .is_some_and(|tried| tried.elapsed() >= SIGN_IN_RETRY);
            if due {
                self.sign_in_again(account).await;
            }
        }
    }

    async fn sign_in_again(&self, account: usize) {
        match self.sign_in_side_door(ACCOUNTS[account]).await {
            Ok(cookie) => {
                self.cookies.lock().unwrap()[account] = cookie;
                self.signed_out.lock().unwrap()[account] = None;
                self.stats.lock().unwrap().sign_ins_again += 1;
            }
            Err(_) => self.signed_out.lock().unwrap()[account] = Some(Instant::now()),
        }
    }

    /// Signs in from an address no case uses; the session cookie, or why not.
    async fn sign_in_side_door(&self, (name, password): (&str, &str)) -> Result<String, String> {
        let n = {
            let mut next = self.side_door.lock().unwrap();
            *next += 1;
            *next
        };
        let [_, _, hi, lo] = n.to_be_bytes();
        let peer = SocketAddr::from(([100, 64, hi, lo], 40_000));
        let body = serde_json::json!({ "username": name, "password": password }).to_string();
        let mut request = Request::post("/api/login")
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        match cookie {
            Some(cookie) if status == StatusCode::OK => Ok(cookie),
            _ => {
                let body = response.into_body().collect().await.unwrap().to_bytes();
                Err(format!(
                    "sign-in as {name} answered {status}: {}",
                    excerpt(&body)
                ))
            }
        }
    }

    /// A plain request from 127.0.0.1: status and body text.
    async fn send_simple(
        &self,
        method: Method,
        path: &str,
        cookie: &str,
        body: Option<String>,
    ) -> (StatusCode, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, HOST)
            .header(header::COOKIE, cookie)
            .body(body.map_or_else(Body::empty, Body::from))
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn report(&self, seed: u64, elapsed: Duration) -> Report {
        let stats = self.stats.lock().unwrap();
        let found = self.found.lock().unwrap();
        let mut summary = format!(
            "fuzz: {} cases in {:.1?} ({:.1} ms a case), seed {seed}\n  \
             answers: {} 1xx, {} 2xx, {} 3xx, {} 4xx, {} 5xx, {} without an answer \
             (panic or timeout); {} live streams left open\n  \
             {} header values refused by HeaderValue (skipped), {} URIs refused (cases skipped), \
             {} cases as a principal whose session an earlier case had ended, \
             {} sign-ins again after that\n",
            stats.cases,
            elapsed,
            elapsed.as_secs_f64() * 1000.0 / stats.cases.max(1) as f64,
            stats.by_class[1],
            stats.by_class[2],
            stats.by_class[3],
            stats.by_class[4],
            stats.by_class[5],
            stats.by_class[0],
            stats.streams,
            stats.skipped_headers,
            stats.invalid_uris,
            stats.ended_principal,
            stats.sign_ins_again,
        );
        let by_status: Vec<String> = stats
            .by_status
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        summary.push_str(&format!("  by status: {}\n", by_status.join(", ")));
        let mut failures = Vec::new();
        for check in Check::ALL {
            let of_check: Vec<_> = found.iter().filter(|((c, _), _)| *c == check).collect();
            let cases: u64 = of_check.iter().map(|(_, f)| f.count).sum();
            summary.push_str(&format!(
                "  check `{}` ({}): {}\n",
                check.key(),
                check.title(),
                if cases == 0 {
                    "passed".to_owned()
                } else {
                    format!("FAILED in {cases} answers, {} distinct", of_check.len())
                }
            ));
            for ((_, signature), found) in &of_check {
                summary.push_str(&format!(
                    "    {:>5} × {signature}   e.g. {}\n",
                    found.count, found.one_line
                ));
            }
            // Full examples: the smallest of each distinct failure.
            for ((_, signature), found) in of_check {
                failures.push(format!(
                    "[{} × {signature}]\n{}",
                    found.count, found.example
                ));
            }
        }
        Report { summary, failures }
    }
}

struct Report {
    summary: String,
    failures: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

impl Who {
    /// The account whose live session this sends, if any.
    fn account(&self) -> Option<usize> {
        match self {
            Self::Account(i) | Self::Doubled(_, i) => Some(*i),
            _ => None,
        }
    }
}

/// Sends `request` to a copy of the router in its own task (so that a panic is caught and
/// reported with the request) and reads the answer, each step bounded.
async fn exchange(router: Router, request: Request<Body>) -> Result<Answer, Trouble> {
    let task = tokio::spawn(async move {
        let response = match tokio::time::timeout(ANSWER_BOUND, router.oneshot(request)).await {
            Err(_) => return Err(Trouble::Timeout("the router did not answer")),
            Ok(response) => response.unwrap_or_else(|never| match never {}),
        };
        let (parts, mut body) = response.into_parts();
        let event_stream = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let streamed = event_stream && parts.status == StatusCode::OK;
        let body = if streamed {
            // Never ends: the first frame if one is ready, then hang up.
            match tokio::time::timeout(FIRST_FRAME_WAIT, body.frame()).await {
                Ok(Some(Ok(frame))) => frame.into_data().map(|d| d.to_vec()).unwrap_or_default(),
                Ok(Some(Err(err))) => return Err(Trouble::Body(err.to_string())),
                Ok(None) | Err(_) => Vec::new(),
            }
        } else {
            match tokio::time::timeout(ANSWER_BOUND, body.collect()).await {
                Err(_) => return Err(Trouble::Timeout("the body did not end")),
                Ok(Err(err)) => return Err(Trouble::Body(err.to_string())),
                Ok(Ok(collected)) => collected.to_bytes().to_vec(),
            }
        };
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
            streamed,
        })
    });
    match tokio::time::timeout(ANSWER_BOUND * 3, task).await {
        Err(_) => Err(Trouble::Timeout("the request's task did not finish")),
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) if err.is_panic() => {
            let at = PANIC_AT
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .unwrap_or_else(|| "(unknown place)".to_owned());
            let message = panic_message(err.into_panic());
            Err(Trouble::Panic(format!("at {at}: {message}")))
        }
        Ok(Err(err)) => Err(Trouble::Panic(err.to_string())),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_owned())
}

/// Every check on one answer; empty when all pass.
fn check(sent: &Sent, outcome: &Result<Answer, Trouble>) -> Vec<Failure> {
    let method = match sent.method.as_str() {
        known @ ("GET" | "POST" | "PATCH" | "DELETE" | "PUT" | "HEAD" | "OPTIONS") => known,
        _ => "(another method)",
    };
    let request_kind = format!("{method} {}", sent.template);
    let fail = |check: Check, signature: String, what: String, answer: String| Failure {
        check,
        signature,
        text: format!(
            "check `{}` failed: {}\n  {what}\n{}{answer}",
            check.key(),
            check.title(),
            sent.describe()
        ),
    };
    let answer = match outcome {
        Ok(answer) => answer,
        Err(Trouble::Panic(message)) => {
            return vec![fail(
                Check::NoPanic,
                format!("{request_kind} → panic"),
                format!("the handler panicked: {message}"),
                String::new(),
            )];
        }
        Err(Trouble::Timeout(what)) => {
            return vec![fail(
                Check::InTime,
                format!("{request_kind} → timeout"),
                format!("{what} within {ANSWER_BOUND:?}"),
                String::new(),
            )];
        }
        Err(Trouble::Body(err)) => {
            return vec![fail(
                Check::BodyReadable,
                format!("{request_kind} → body error"),
                format!("reading the body failed: {err}"),
                String::new(),
            )];
        }
    };
    let status = answer.status.as_u16();
    let content_type = answer
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = if content_type.is_empty() {
        "no content type"
    } else {
        content_type
    };
    let mut failures = Vec::new();
    if answer.status.is_server_error() {
        failures.push(fail(
            Check::No5xx,
            format!("{request_kind} → {status}"),
            format!("answered {}", answer.status),
            answer.describe(),
        ));
    }
    if sent.is_api() && answer.status.is_client_error() {
        let problem = if sent.method == "HEAD" {
            // A HEAD answer has no body; its content type still says what a GET gets.
            (!content_type.starts_with("application/json"))
                .then(|| format!("a HEAD answer with content type {content_type:?}, not JSON"))
        } else {
            match serde_json::from_slice::<serde_json::Value>(&answer.body) {
                Err(err) => Some(format!("the body is not JSON ({err})")),
                Ok(json) => match json.get("error") {
                    Some(serde_json::Value::String(message)) if !message.trim().is_empty() => None,
                    _ => Some(format!("the JSON has no non-empty string `error`: {json}")),
                },
            }
        };
        if let Some(problem) = problem {
            // Any route answers a method it lacks alike: one line for all of them.
            let signature = if answer.status == StatusCode::METHOD_NOT_ALLOWED {
                format!("a method the path does not serve → {status} ({kind})")
            } else {
                format!("{} → {status} ({kind})", sent.template)
            };
            failures.push(fail(
                Check::ApiErrorIsJson,
                signature,
                problem,
                answer.describe(),
            ));
        }
    }
    if sent.is_api() {
        let no_store = answer
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("no-store"));
        if !no_store {
            failures.push(fail(
                Check::ApiNoStore,
                format!("any /api request → {status} ({kind})"),
                "no `Cache-Control: no-store`".to_owned(),
                answer.describe(),
            ));
        }
    }
    failures
}

/// A failure's text as one short line: the request line and the answer's status and body.
fn one_line(text: &str) -> String {
    let field = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim_start().strip_prefix(prefix))
            .unwrap_or("")
            .to_owned()
    };
    let cut = |s: String, n: usize| {
        if s.chars().count() > n {
            format!("{}…", s.chars().take(n).collect::<String>())
        } else {
            s
        }
    };
    let answer = field("answer: ");
    let answer = if answer.is_empty() {
        field("the handler panicked: ")
    } else {
        format!("{answer} {}", cut(field("answer body: "), 100))
    };
    format!("{} → {answer}", cut(field("request: "), 120))
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}
