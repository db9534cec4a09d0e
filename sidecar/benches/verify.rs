//! In-process Verify per algorithm, beside the bare aws-lc signature check of the
//! same token and `jsonwebtoken::decode`, measured in the same run; plus the
//! verified-token cache hit.
//!
//! `<alg>/paired` measures the overheads themselves: every sample rotates short timed
//! blocks of Verify calls, of bare (pre-parsed key) checks and of `jsonwebtoken::decode`
//! calls, ~20 µs each or a single call for the slow signatures, each kind first, second
//! and third in turn, so that load from other processes and changes of clock speed land
//! on all three alike. Criterion's figure for it is the Verify half; the bench prints the
//! medians of the three, and the medians of the per-block differences: Verify's overhead
//! over the bare check, jsonwebtoken's, and Verify's excess over jsonwebtoken's `decode`
//! (the bar: at most 1 µs).
//!
//! `cargo bench -p denylist-sidecar --bench verify`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use denylist_proto::pb::Reason;
use denylist_sidecar::clock::{Clock as _, SharedClock, SystemClock};
use denylist_sidecar::config::Config;
use denylist_sidecar::denylist::{Denylist, DenylistSettings};
use denylist_sidecar::freshness::Freshness;
use denylist_sidecar::keys::KeyStore;
use denylist_sidecar::verify::Verifier;

const ISS: &str = "https://bench.example";

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/keys")
}

fn pkcs8(name: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(keys_dir().join(name)).expect("bench key");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM body")
}

/// A public-key verification algorithm and the key bytes aws-lc takes.
type BareKey = (&'static dyn sig::VerificationAlgorithm, Vec<u8>);

/// Signs a JWS signing input.
type Signer = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// One algorithm under test: how to sign, and the bare-check inputs.
struct Case {
    alg: &'static str,
    config_keys: String,
    sign: Signer,
    bare: Option<BareKey>,
    hmac_secret: Option<Vec<u8>>,
    jwt_key: jsonwebtoken::DecodingKey,
    jwt_alg: jsonwebtoken::Algorithm,
}

fn pem_keys(file: &str) -> String {
    format!(
        "pem_files = [{{ path = \"{}\", kid = \"k1\" }}]",
        keys_dir().join(file).display()
    )
}

fn cases() -> Vec<Case> {
    let rng = SystemRandom::new();
    let secret = std::fs::read(keys_dir().join("hmac.secret")).expect("hmac secret");
    let hkey = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
    let rsa =
        Arc::new(aws_lc_rs::rsa::KeyPair::from_pkcs8(&pkcs8("rsa-private.pem")).expect("rsa"));
    let rsa_pub = rsa.public_key().as_ref().to_vec();
    let p256 = Arc::new(
        sig::EcdsaKeyPair::from_pkcs8(
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8("p256-private.pem"),
        )
        .expect("p256"),
    );
    let p256_pub = p256.public_key().as_ref().to_vec();
    let p384 = Arc::new(
        sig::EcdsaKeyPair::from_pkcs8(
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            &pkcs8("p384-private.pem"),
        )
        .expect("p384"),
    );
    let p384_pub = p384.public_key().as_ref().to_vec();
    let ed =
        Arc::new(sig::Ed25519KeyPair::from_pkcs8(&pkcs8("ed25519-private.pem")).expect("ed25519"));
    let ed_pub = ed.public_key().as_ref().to_vec();
    let read = |f: &str| std::fs::read(keys_dir().join(f)).expect("public pem");

    let rsa_sign = |padding: &'static dyn aws_lc_rs::signature::RsaEncoding| {
        let rsa = Arc::clone(&rsa);
        let rng = rng.clone();
        Box::new(move |m: &[u8]| {
            let mut out = vec![0; rsa.public_modulus_len()];
            rsa.sign(padding, &rng, m, &mut out).expect("rsa sign");
            out
        }) as Signer
    };
    let rng2 = rng.clone();
    let rng3 = rng.clone();
    vec![
        Case {
            alg: "HS256",
            config_keys: format!(
                "hmac_secret_files = [{{ path = \"{}\", kid = \"k1\" }}]",
                keys_dir().join("hmac.secret").display()
            ),
            sign: Box::new(move |m| aws_lc_rs::hmac::sign(&hkey, m).as_ref().to_vec()),
            bare: None,
            hmac_secret: Some(secret.clone()),
            jwt_key: jsonwebtoken::DecodingKey::from_secret(&secret),
            jwt_alg: jsonwebtoken::Algorithm::HS256,
        },
        Case {
            alg: "RS256",
            config_keys: pem_keys("rsa-public.pem"),
            sign: rsa_sign(&sig::RSA_PKCS1_SHA256),
            bare: Some((&sig::RSA_PKCS1_2048_8192_SHA256, rsa_pub.clone())),
            hmac_secret: None,
            jwt_key: jsonwebtoken::DecodingKey::from_rsa_pem(&read("rsa-public.pem"))
                .expect("jwt rsa"),
            jwt_alg: jsonwebtoken::Algorithm::RS256,
        },
        Case {
            alg: "PS256",
            config_keys: pem_keys("rsa-public.pem"),
            sign: rsa_sign(&sig::RSA_PSS_SHA256),
            bare: Some((&sig::RSA_PSS_2048_8192_SHA256, rsa_pub)),
            hmac_secret: None,
            jwt_key: jsonwebtoken::DecodingKey::from_rsa_pem(&read("rsa-public.pem"))
                .expect("jwt rsa"),
            jwt_alg: jsonwebtoken::Algorithm::PS256,
        },
        Case {
            alg: "ES256",
            config_keys: pem_keys("p256-public.pem"),
            sign: Box::new(move |m| p256.sign(&rng2, m).expect("es256").as_ref().to_vec()),
            bare: Some((&sig::ECDSA_P256_SHA256_FIXED, p256_pub)),
            hmac_secret: None,
            jwt_key: jsonwebtoken::DecodingKey::from_ec_pem(&read("p256-public.pem"))
                .expect("jwt ec"),
            jwt_alg: jsonwebtoken::Algorithm::ES256,
        },
        Case {
            alg: "ES384",
            config_keys: pem_keys("p384-public.pem"),
            sign: Box::new(move |m| p384.sign(&rng3, m).expect("es384").as_ref().to_vec()),
            bare: Some((&sig::ECDSA_P384_SHA384_FIXED, p384_pub)),
            hmac_secret: None,
            jwt_key: jsonwebtoken::DecodingKey::from_ec_pem(&read("p384-public.pem"))
                .expect("jwt ec"),
            jwt_alg: jsonwebtoken::Algorithm::ES384,
        },
        Case {
            alg: "EdDSA",
            config_keys: pem_keys("ed25519-public.pem"),
            sign: Box::new(move |m| ed.sign(m).as_ref().to_vec()),
            bare: Some((&sig::ED25519, ed_pub)),
            hmac_secret: None,
            jwt_key: jsonwebtoken::DecodingKey::from_ed_pem(&read("ed25519-public.pem"))
                .expect("jwt ed"),
            jwt_alg: jsonwebtoken::Algorithm::EdDSA,
        },
    ]
}

fn now() -> i64 {
    SystemClock.now_secs()
}

/// A realistic access token: registered claims plus a few custom ones.
fn mint(case: &Case) -> String {
    let header = format!(r#"{{"alg":"{}","typ":"JWT","kid":"k1"}}"#, case.alg);
    let now = now();
    let claims = format!(
        r#"{{"iss":"{ISS}","sub":"user-8f14e45f","aud":"orders-api","iat":{now},"nbf":{now},"exp":{},"jti":"3f2a6c1e-9b7d-4a51-8e0f-2c4d6b8a9e10","sid":"s-77","scope":"orders:read orders:write","roles":["buyer"],"tenant":"acme"}}"#,
        now + 3600
    );
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let s = (case.sign)(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(s))
}

fn verifier(rt: &tokio::runtime::Runtime, case: &Case, cache_entries: usize) -> Verifier {
    let dir = std::env::temp_dir();
    let toml = format!(
        r#"
[denylist]
file = "{}"
[verify]
cache_entries = {cache_entries}
[[issuers]]
issuer = "{ISS}"
algorithms = ["{}"]
audiences = ["orders-api"]
[issuers.keys]
{}
"#,
        dir.join("unused.jsonl").display(),
        case.alg,
        case.config_keys
    );
    let config = Config::from_toml(&toml).expect("bench config");
    config.validate().expect("valid bench config");
    let clock: SharedClock = Arc::new(SystemClock);
    let keys = rt
        .block_on(KeyStore::load(&config.issuers, Arc::clone(&clock)))
        .expect("keys");
    let denylist = Arc::new(Denylist::new(
        DenylistSettings {
            expected_entries: 100_000,
            bloom_fp_rate: 0.001,
            max_lifetimes: HashMap::new(),
            default_max_lifetime: 86_400,
        },
        Arc::clone(&clock),
    ));
    let freshness = Arc::new(Freshness::new(
        Arc::clone(&clock),
        Duration::from_secs(3600),
        config.denylist.staleness_policy,
    ));
    freshness.mark_heard();
    freshness.set_ready();
    Verifier::new(&config, &keys, denylist, freshness, clock)
}

/// Criterion samples per benchmark.
const SAMPLES: usize = 50;

/// How long one timed block of calls should last: long enough that the two clock
/// reads around it are noise, short enough that the machine cannot change speed
/// between a Verify block and the bare block beside it.
const BLOCK: Duration = Duration::from_micros(20);

/// One paired sample: the per-call Verify, bare and `jsonwebtoken::decode` times of its
/// blocks, in µs.
type Blocks = Vec<[f64; 3]>;

/// `<alg>/paired`: see the module docs. Prints the medians when done.
fn bench_paired(
    group: &mut BenchmarkGroup<'_, WallTime>,
    alg: &str,
    verifier: &Verifier,
    token: &str,
    bare: impl Fn() -> bool,
    jwt: impl Fn() -> bool,
) {
    let run = |calls: u64, f: &dyn Fn()| {
        let start = Instant::now();
        for _ in 0..calls {
            f();
        }
        start.elapsed()
    };
    let verify = || {
        black_box(verifier.verify(black_box(token)).reason);
    };
    let check = || {
        black_box(bare());
    };
    let decode = || {
        black_box(jwt());
    };
    let halves: [&dyn Fn(); 3] = [&verify, &check, &decode];
    // Calls per block, from the slowest of the three (jsonwebtoken's decode): one for
    // the slow signatures (ES384 takes ~200 µs), a few for HMAC. Probed when the
    // benchmark first runs (not at all when a filter leaves it out).
    let per_block = std::cell::OnceCell::new();
    let per_block = || {
        *per_block.get_or_init(|| {
            let probe = run(200, &decode) / 200;
            (BLOCK.as_nanos() / probe.as_nanos().max(1)).clamp(1, 1000) as u64
        })
    };

    let samples: RefCell<Vec<Blocks>> = RefCell::new(Vec::new());
    group.bench_function(format!("{alg}/paired"), |b| {
        b.iter_custom(|iters| {
            let per_block = per_block();
            let blocks = iters.div_ceil(per_block);
            let mut sample = Vec::with_capacity(blocks as usize);
            let mut verify_total = Duration::ZERO;
            for i in 0..blocks {
                // Rotating which kind goes first cancels any effect of the position
                // (warmer caches, a frequency step).
                let mut times = [Duration::ZERO; 3];
                for k in 0..3 {
                    let which = (i as usize + k) % 3;
                    times[which] = run(per_block, halves[which]);
                }
                verify_total += times[0];
                let per_call = |d: Duration| d.as_secs_f64() * 1e6 / per_block as f64;
                sample.push(times.map(per_call));
            }
            samples.borrow_mut().push(sample);
            // Criterion plans its iteration counts on this, so it must be a real time:
            // the Verify half, scaled to the `iters` calls it asked for.
            verify_total.mul_f64(iters as f64 / (blocks * per_block) as f64)
        })
    });
    // The last samples are the measured ones; those before were the warm-up.
    let samples = samples.into_inner();
    // Nothing ran: a filter on the command line left this benchmark out.
    if samples.is_empty() {
        return;
    }
    let samples = &samples[samples.len().saturating_sub(SAMPLES)..];
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mean = |b: &Blocks, k: usize| b.iter().map(|t| t[k]).sum::<f64>() / b.len() as f64;
    let half = |k: usize| median(samples.iter().map(|s| mean(s, k)).collect());
    let (verify, check, decode) = (half(0), half(1), half(2));
    let blocks: Vec<&[f64; 3]> = samples.iter().flatten().collect();
    let n = blocks.len();
    let diff = |a: usize, b: usize| median(blocks.iter().map(|t| t[a] - t[b]).collect());
    let (ours, theirs, excess) = (diff(0, 1), diff(2, 1), diff(0, 2));
    let per_block = per_block();
    println!(
        "paired {alg}: Verify {verify:.3} µs, bare {check:.3} µs, jsonwebtoken::decode \
         {decode:.3} µs; overhead over bare: Verify {ours:+.3} µs, jsonwebtoken {theirs:+.3} µs; \
         Verify - decode {excess:+.3} µs (medians of {n} block differences, {per_block} \
         calls a block)"
    );
}

fn bench_verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("verify");
    group
        .sample_size(SAMPLES)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for case in cases() {
        let token = mint(&case);
        let (signing_input, sig_b64) = token.rsplit_once('.').expect("token");
        let signature = URL_SAFE_NO_PAD.decode(sig_b64).expect("sig");

        let uncached = verifier(&rt, &case, 0);
        let v = uncached.verify(&token);
        assert_eq!(v.reason, Reason::Ok, "{}: {}", case.alg, v.detail);
        group.bench_function(format!("{}/denylist_verify", case.alg), |b| {
            b.iter(|| black_box(uncached.verify(black_box(&token))).reason)
        });

        // jsonwebtoken's own decode of the same token, with its default checks.
        let mut validation = jsonwebtoken::Validation::new(case.jwt_alg);
        validation.set_audience(&["orders-api"]);
        validation.set_issuer(&[ISS]);
        let jwt = || {
            jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &case.jwt_key, &validation)
                .is_ok()
        };
        assert!(jwt());

        // The floor: the signature check alone, as aws-lc does it for a key given as bytes.
        match (&case.bare, &case.hmac_secret) {
            (Some((alg, public)), _) => {
                let key = sig::UnparsedPublicKey::new(*alg, public.clone());
                assert!(key.verify(signing_input.as_bytes(), &signature).is_ok());
                group.bench_function(format!("{}/bare_aws_lc", case.alg), |b| {
                    b.iter(|| {
                        key.verify(black_box(signing_input.as_bytes()), black_box(&signature))
                    })
                });
                let parsed = sig::ParsedPublicKey::new(*alg, public).expect("parsed");
                let bare = || {
                    parsed
                        .verify_sig(black_box(signing_input.as_bytes()), black_box(&signature))
                        .is_ok()
                };
                group.bench_function(format!("{}/bare_aws_lc_preparsed", case.alg), |b| {
                    b.iter(bare)
                });
                bench_paired(&mut group, case.alg, &uncached, &token, bare, jwt);
            }
            (None, Some(secret)) => {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
                let bare = || {
                    aws_lc_rs::hmac::verify(
                        &key,
                        black_box(signing_input.as_bytes()),
                        black_box(&signature),
                    )
                    .is_ok()
                };
                group.bench_function(format!("{}/bare_aws_lc", case.alg), |b| b.iter(bare));
                bench_paired(&mut group, case.alg, &uncached, &token, bare, jwt);
            }
            (None, None) => {}
        }

        group.bench_function(format!("{}/jsonwebtoken_decode", case.alg), |b| {
            b.iter(&jwt)
        });

        let cached = verifier(&rt, &case, 10_000);
        assert_eq!(cached.verify(&token).reason, Reason::Ok);
        group.bench_function(format!("{}/denylist_verify_cache_hit", case.alg), |b| {
            b.iter(|| black_box(cached.verify(black_box(&token))).reason)
        });
    }
    group.finish();
}

/// Where the time between the bare check and a full Verify goes, for HS256 (the
/// cheapest signature, so the overhead shows most).
fn bench_breakdown(c: &mut Criterion) {
    use denylist_sidecar::jws;
    let case = cases().swap_remove(0);
    let token = mint(&case);
    let segments = jws::split(&token, 8192).expect("splits");
    let payload = segments.payload.to_owned();
    let mut group = c.benchmark_group("breakdown_hs256");
    group
        .sample_size(SAMPLES)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    group.bench_function("jsonwebtoken_decode_header", |b| {
        b.iter(|| jsonwebtoken::decode_header(black_box(&token)).map(|h| h.alg))
    });
    group.bench_function("jws_split_and_read_header", |b| {
        b.iter(|| {
            let t = black_box(&token);
            jws::read_header(&jws::split(t, 8192).expect("splits")).map(|h| h.alg)
        })
    });
    // The payload as jsonwebtoken's own `decode::<Value>` reads it, and as the
    // Verify path does (strict: no repeated names, nesting bounded).
    let json = URL_SAFE_NO_PAD.decode(&payload).expect("payload");
    group.bench_function("payload_json_value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&json)).is_ok())
    });
    group.bench_function("payload_json_strict", |b| {
        b.iter(|| serde_json::from_slice::<jws::StrictObject>(black_box(&json)).is_ok())
    });
    group.bench_function("payload_to_claims", |b| {
        b.iter(|| {
            jws::decode_payload(black_box(&payload))
                .and_then(jws::Claims::new)
                .map(|c| c.exp())
        })
    });
    let denylist = Denylist::new(DenylistSettings::default(), Arc::new(SystemClock));
    let facts = denylist_sidecar::denylist::TokenFacts {
        issuer: ISS,
        jti: Some("3f2a6c1e-9b7d-4a51-8e0f-2c4d6b8a9e10"),
        subject: Some("user-8f14e45f"),
        ..Default::default()
    };
    group.bench_function("denylist_is_revoked_empty", |b| {
        b.iter(|| denylist.is_revoked(black_box(&facts)).is_some())
    });
    let clock = SystemClock;
    group.bench_function("clock_now", |b| b.iter(|| clock.now_ms()));
    group.finish();
}

criterion_group!(benches, bench_verify, bench_breakdown);
criterion_main!(benches);
