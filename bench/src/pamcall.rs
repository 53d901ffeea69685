//! In-process PAM calls: `pam_start … pam_authenticate … pam_end` through the real libpam,
//! for pam_permit, pam_google_authenticator, pam_oath and pam_mfa, interleaved, with the
//! fsync floor (a 100-byte write + fsync + rename in the same directory) in the same loop.
//!
//! No sshd, no network, no client: what is left is the module's own cost (loading, reading
//! its state, checking the code, writing its replay record). Every user has one secret,
//! made by the real `google-authenticator` program and shared by the three code modules.
//! A round calls every module once for each user, in a new random order each time; before a
//! round every module's replay state is put back (untimed), so every timed call is a real
//! accept that writes its replay record (pam_mfa: mfad's SQLite commit;
//! google-authenticator: its secret file; pam_oath: its users file).
//!
//! Loading a module is timed apart, in fresh processes (`--pam-load-probe`): there, as in
//! each sshd child, the first `pam_start` of a service opens the module.

use crate::BenchError;
use crate::daemon::{self, BenchDaemon, StoreSpec, params, unix_now};
use crate::stats::{ORDER_SEED, Samples};
use mfa_e2e::scratch::{ScratchDir, unique_name};
use mfa_e2e::sshd::PamService;
use mfa_e2e::user::TestUser;
use mfa_test_support::postgres::TestPostgres;
use mfad::factor::totp;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::ffi::{CStr, CString, c_int, c_void};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The few libpam functions and types the loop needs (Linux-PAM's `security/pam_appl.h`).
mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    pub const PAM_SUCCESS: c_int = 0;
    pub const PAM_BUF_ERR: c_int = 5;
    pub const PAM_TTY: c_int = 3;
    pub const PAM_RHOST: c_int = 4;
    pub const PAM_PROMPT_ECHO_OFF: c_int = 1;
    pub const PAM_PROMPT_ECHO_ON: c_int = 2;

    #[repr(C)]
    pub struct PamHandle {
        _private: [u8; 0],
    }

    #[repr(C)]
    pub struct PamMessage {
        pub msg_style: c_int,
        pub msg: *const c_char,
    }

    #[repr(C)]
    pub struct PamResponse {
        pub resp: *mut c_char,
        pub resp_retcode: c_int,
    }

    pub type ConvFn = unsafe extern "C" fn(
        c_int,
        *mut *const PamMessage,
        *mut *mut PamResponse,
        *mut c_void,
    ) -> c_int;

    #[repr(C)]
    pub struct PamConv {
        pub conv: Option<ConvFn>,
        pub appdata_ptr: *mut c_void,
    }

    #[link(name = "pam")]
    unsafe extern "C" {
        pub fn pam_start(
            service: *const c_char,
            user: *const c_char,
            conv: *const PamConv,
            pamh: *mut *mut PamHandle,
        ) -> c_int;
        pub fn pam_set_item(pamh: *mut PamHandle, item_type: c_int, item: *const c_void) -> c_int;
        pub fn pam_authenticate(pamh: *mut PamHandle, flags: c_int) -> c_int;
        pub fn pam_end(pamh: *mut PamHandle, status: c_int) -> c_int;
    }
}

/// What the conversation answers, and how many prompts it saw.
struct Answer {
    code: CString,
    prompts: usize,
}

/// The application's conversation: the code at every prompt, nothing for messages.
///
/// # Safety
/// Called by libpam with `n` valid messages and `appdata` pointing to a live [`Answer`].
unsafe extern "C" fn converse(
    n: c_int,
    msgs: *mut *const ffi::PamMessage,
    resp: *mut *mut ffi::PamResponse,
    appdata: *mut c_void,
) -> c_int {
    let Ok(count) = usize::try_from(n) else {
        return ffi::PAM_BUF_ERR;
    };
    if count == 0 || msgs.is_null() || resp.is_null() || appdata.is_null() {
        return ffi::PAM_BUF_ERR;
    }
    // SAFETY: libpam frees the array and each answer with free(3): allocate with calloc.
    let out = unsafe { libc::calloc(count, std::mem::size_of::<ffi::PamResponse>()) }
        as *mut ffi::PamResponse;
    if out.is_null() {
        return ffi::PAM_BUF_ERR;
    }
    // SAFETY: appdata is the &mut Answer given to pam_start, alive for the whole call.
    let answer = unsafe { &mut *(appdata as *mut Answer) };
    for i in 0..count {
        // SAFETY: Linux-PAM passes an array of `count` message pointers.
        let style = unsafe { (**msgs.add(i)).msg_style };
        if style == ffi::PAM_PROMPT_ECHO_OFF || style == ffi::PAM_PROMPT_ECHO_ON {
            answer.prompts += 1;
            // SAFETY: out has `count` zeroed entries; strdup copies a valid C string.
            unsafe { (*out.add(i)).resp = libc::strdup(answer.code.as_ptr()) };
        }
    }
    // SAFETY: resp is libpam's out-pointer.
    unsafe { *resp = out };
    ffi::PAM_SUCCESS
}

/// The parts of a call's time, in [`PamCallResult::calls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Start = 0,
    Authenticate = 1,
    /// The whole call less pam_start and pam_authenticate: pam_end, and the two
    /// pam_set_item calls.
    End = 2,
    Whole = 3,
}

/// Times of one call, from pam_start to the end of pam_end.
#[derive(Debug, Clone, Copy)]
pub struct CallTimes {
    pub start: Duration,
    pub authenticate: Duration,
    pub whole: Duration,
    pub status: c_int,
    pub prompts: usize,
}

/// One `pam_start(service, user) … pam_authenticate … pam_end`, answering `code`.
pub fn call(service: &CStr, user: &CStr, code: &str) -> Result<CallTimes, BenchError> {
    let mut answer = Answer {
        code: CString::new(code).map_err(|_| BenchError("a code with a NUL".into()))?,
        prompts: 0,
    };
    let conv = ffi::PamConv {
        conv: Some(converse),
        appdata_ptr: &mut answer as *mut Answer as *mut c_void,
    };
    let mut pamh: *mut ffi::PamHandle = std::ptr::null_mut();
    let t0 = Instant::now();
    // SAFETY: valid C strings, a conversation that outlives the handle, an out-pointer.
    let r = unsafe { ffi::pam_start(service.as_ptr(), user.as_ptr(), &conv, &mut pamh) };
    if r != ffi::PAM_SUCCESS || pamh.is_null() {
        return Err(BenchError(format!(
            "pam_start({}) failed: {r}",
            service.to_string_lossy()
        )));
    }
    // What sshd sets before authenticating.
    // SAFETY: pamh is live; libpam copies the strings.
    unsafe {
        ffi::pam_set_item(pamh, ffi::PAM_RHOST, c"192.0.2.7".as_ptr() as *const c_void);
        ffi::pam_set_item(pamh, ffi::PAM_TTY, c"ssh".as_ptr() as *const c_void);
    }
    let t1 = Instant::now();
    // SAFETY: pamh is live.
    let status = unsafe { ffi::pam_authenticate(pamh, 0) };
    let t2 = Instant::now();
    // SAFETY: pamh is live and not used after this.
    unsafe { ffi::pam_end(pamh, status) };
    let t3 = Instant::now();
    Ok(CallTimes {
        start: t1 - t0,
        authenticate: t2 - t1,
        whole: t3 - t0,
        status,
        prompts: answer.prompts,
    })
}

/// `--pam-load-probe SERVICE MODULE`: in this fresh process, the first pam_start of SERVICE
/// (which opens its modules) and the pam_end after it; prints both in nanoseconds, whether
/// MODULE stays mapped after pam_end (1) or not (0), and the page faults of the pam_start.
pub fn load_probe(service: &str, module: &str) -> Result<(), BenchError> {
    let service = CString::new(service).map_err(|_| BenchError("bad service".into()))?;
    let conv = ffi::PamConv {
        conv: Some(converse),
        appdata_ptr: std::ptr::null_mut(),
    };
    let mut pamh: *mut ffi::PamHandle = std::ptr::null_mut();
    let faults_before = minor_faults();
    let t0 = Instant::now();
    // SAFETY: as in `call`; no conversation happens (no authenticate).
    let r = unsafe { ffi::pam_start(service.as_ptr(), c"root".as_ptr(), &conv, &mut pamh) };
    let t1 = Instant::now();
    let faults = minor_faults().saturating_sub(faults_before);
    if r != ffi::PAM_SUCCESS || pamh.is_null() {
        return Err(BenchError(format!("pam_start failed: {r}")));
    }
    // SAFETY: pamh is live and not used after this.
    unsafe { ffi::pam_end(pamh, ffi::PAM_SUCCESS) };
    let t2 = Instant::now();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let stays = maps.contains(module);
    println!(
        "{} {} {} {faults}",
        (t1 - t0).as_nanos(),
        (t2 - t1).as_nanos(),
        u8::from(stays)
    );
    Ok(())
}

/// Page faults this process has taken (the pages a module touched as it was loaded).
fn minor_faults() -> u64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    u64::try_from(usage.ru_minflt + usage.ru_majflt).unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    Permit,
    GoogleAuthenticator,
    Oath,
    PamMfa,
    /// pam_mfa again, to a second mfad whose store is a PostgreSQL database (seeded from the
    /// first's SQLite file by `mfad --migrate-store`).
    PamMfaPostgres,
    /// pam_mfa to the socket floor (`mfa-bench --socket-floor`): a server on mfad's runtime
    /// that answers the same frames and does nothing else (no store, lookup, code check,
    /// fsync or log line). What pam_mfa's call costs before mfad does any work: the
    /// module, the connection and the two round trips between two processes.
    PamMfaFloor,
    /// Not a module: 100 bytes written, fsynced and renamed into place, the least a durable
    /// replay record costs on this disk.
    FsyncFloor,
}

impl Module {
    pub const ALL: [Module; 7] = [
        Module::Permit,
        Module::GoogleAuthenticator,
        Module::Oath,
        Module::PamMfa,
        Module::PamMfaPostgres,
        Module::PamMfaFloor,
        Module::FsyncFloor,
    ];

    /// The label of a column.
    pub fn short(self) -> &'static str {
        match self {
            Module::Permit => "permit",
            Module::GoogleAuthenticator => "GA",
            Module::Oath => "oath",
            Module::PamMfa => "mfa",
            Module::PamMfaPostgres => "mfa PG",
            Module::PamMfaFloor => "socket floor",
            Module::FsyncFloor => "fsync floor",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Module::Permit => "pam_permit",
            Module::GoogleAuthenticator => "pam_google_authenticator",
            Module::Oath => "pam_oath",
            Module::PamMfa => "pam_mfa (mfad, SQLite)",
            Module::PamMfaPostgres => "pam_mfa (mfad, PostgreSQL)",
            Module::PamMfaFloor => "pam_mfa to the socket floor (no mfad, no work)",
            Module::FsyncFloor => "fsync floor: 100 B write + fsync + rename",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Module::Permit => "pam_permit.so",
            Module::GoogleAuthenticator => "pam_google_authenticator.so",
            Module::Oath => "pam_oath.so",
            Module::PamMfa | Module::PamMfaPostgres | Module::PamMfaFloor => "libpam_mfa.so",
            Module::FsyncFloor => "",
        }
    }
}

pub struct PamCallResult {
    pub users: usize,
    pub rounds: usize,
    /// Per module, each measured call's times by [`Part`], one entry per (round, user) in
    /// the same order for every module, `None` where the call failed: the modules' calls
    /// for one user in one round ran one right after another, so the differences between
    /// them are free of the host's drift over the run. (The fsync floor's one time stands
    /// for every part.)
    pub calls: Vec<(Module, Vec<Option<[Duration; 4]>>)>,
    /// Per module, in the same order as `calls`: the module called just before each call
    /// (`None` for a round's first call).
    pub after: Vec<(Module, Vec<Option<Module>>)>,
    pub failures: Vec<(Module, usize)>,
    /// Per module: the first pam_start in a fresh process, its pam_end, whether the module
    /// stayed mapped after pam_end, and the page faults of each first pam_start.
    pub load: Vec<(Module, Samples, Samples, bool, Vec<f64>)>,
    pub load_runs: usize,
    /// What a message between two waiting threads costs here ([`crate::wake`]), measured
    /// after the calls; `None` if the probe could not run (said in `problems`).
    pub messages: Option<crate::wake::Messages>,
    pub problems: Vec<String>,
    pub versions: String,
}

impl PamCallResult {
    /// Per module, the measured calls' (pam_start, pam_authenticate, whole
    /// pam_start…pam_end), failed calls left out.
    pub fn samples(&self) -> Vec<(Module, [Samples; 3])> {
        self.calls
            .iter()
            .map(|(m, calls)| {
                let mut parts: [Samples; 3] = Default::default();
                for c in calls.iter().flatten() {
                    for (s, part) in
                        parts
                            .iter_mut()
                            .zip([Part::Start, Part::Authenticate, Part::Whole])
                    {
                        s.push(c[part as usize]);
                    }
                }
                (*m, parts)
            })
            .collect()
    }
}

/// Dropped in field order: services, the mfads, the server, users, then the directory.
struct World {
    services: Vec<(Module, PamService)>,
    mfad: BenchDaemon,
    mfad_pg: BenchDaemon,
    floor: BenchDaemon,
    pg: TestPostgres,
    users: Vec<BenchUser>,
    dir: PathBuf,
    oath_file: PathBuf,
    oath_text: String,
    database: PathBuf,
    _scratch: ScratchDir,
}

struct BenchUser {
    user: TestUser,
    c_name: CString,
    secret: Zeroizing<Vec<u8>>,
    /// The secret file as `google-authenticator` wrote it: put back before every round.
    ga_text: String,
    ga_path: PathBuf,
}

fn write_replacing(
    path: &Path,
    text: &str,
    owner: Option<(u32, u32)>,
    mode: u32,
) -> Result<(), BenchError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("bench-tmp");
    std::fs::write(&tmp, text)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A secret file made by the real `google-authenticator` (time-based, no reuse, window 3,
/// five emergency codes, no rate limit), owned by the user; returns its text and secret.
fn google_authenticator_file(user: &TestUser) -> Result<(PathBuf, String, Vec<u8>), BenchError> {
    let path = Path::new(&user.home).join(".google_authenticator");
    let out = Command::new("google-authenticator")
        .args([
            "-t", "-d", "-f", "-q", "-C", "-u", "-w", "3", "-e", "5", "-s",
        ])
        .arg(&path)
        .output()
        .map_err(|e| {
            BenchError(format!(
                "running google-authenticator (apt-get install libpam-google-authenticator): {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(BenchError(format!(
            "google-authenticator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = std::fs::read_to_string(&path)?;
    let secret = text
        .lines()
        .next()
        .and_then(|l| data_encoding::BASE32_NOPAD.decode(l.trim().as_bytes()).ok())
        .ok_or_else(|| BenchError(format!("no secret on the first line of {}", path.display())))?;
    write_replacing(&path, &text, Some((user.uid, user.gid)), 0o400)?;
    Ok((path, text, secret))
}

impl World {
    fn start(mfad_bin: &Path, bin: &Path, n_users: usize) -> Result<World, BenchError> {
        mfa_e2e::paths::require_root()?;
        let module = crate::ssh::require_modules(bin, &[("pam_permit.so", "libpam-modules")])?;
        let name = unique_name();
        let scratch = ScratchDir::new(&name)?;
        let dir = scratch.path().to_path_buf();
        eprintln!("mfa-bench: pam calls: creating {n_users} users and their secrets");
        let mut users = Vec::with_capacity(n_users);
        for _ in 0..n_users {
            let user = TestUser::create(&unique_name())?;
            let (ga_path, ga_text, secret) = google_authenticator_file(&user)?;
            users.push(BenchUser {
                c_name: CString::new(user.name.clone())
                    .map_err(|_| BenchError("a user name with a NUL".into()))?,
                user,
                secret: Zeroizing::new(secret),
                ga_text,
                ga_path,
            });
        }
        // mfad with its store in the scratch directory, the system's NSS (the users are real).
        let mfad_dir = dir.join("mfad");
        let database = mfad_dir.join("lib/mfa.db");
        std::fs::create_dir_all(mfad_dir.join("lib"))?;
        daemon::seed_totp(
            &database,
            users
                .iter()
                .map(|u| (u.user.name.clone(), u.secret.to_vec())),
            "app",
            params(),
        )?;
        let config = daemon::write_config(&mfad_dir, 0, &StoreSpec::Sqlite(&database), "")?;
        // The same users and secrets on PostgreSQL, moved there as a site would.
        let pg = crate::start_postgres()?;
        let (url, password_file) = (pg.url(), pg.password_file());
        let pg_dir = dir.join("mfad-pg");
        let store_key =
            daemon::migrate_into_postgres(mfad_bin, &pg_dir, &database, &url, &password_file)?;
        let pg_spec = StoreSpec::Postgres {
            url: &url,
            password_file: &password_file,
            store_key: &store_key,
        };
        let pg_config = daemon::write_config(&pg_dir, 0, &pg_spec, "")?;
        let mfad_pg = BenchDaemon::spawn_system_nss(mfad_bin, &pg_dir, &pg_config)?;
        let mfad = BenchDaemon::spawn_system_nss(mfad_bin, &mfad_dir, &config)?;
        let floor = BenchDaemon::spawn_floor(&dir.join("socket-floor"))?;
        let oath_file = dir.join("users.oath");
        let oath_text: String = users
            .iter()
            .map(|u| {
                format!(
                    "HOTP/T30/6\t{}\t-\t{}\n",
                    u.user.name,
                    data_encoding::HEXLOWER.encode(&u.secret)
                )
            })
            .collect();
        let mut services = Vec::new();
        for m in Module::ALL {
            let line = match m {
                Module::Permit => "auth required pam_permit.so".to_string(),
                Module::GoogleAuthenticator => "auth required pam_google_authenticator.so".into(),
                Module::Oath => format!(
                    "auth required pam_oath.so usersfile={} window=1 digits=6",
                    oath_file.display()
                ),
                Module::PamMfa | Module::PamMfaPostgres | Module::PamMfaFloor => format!(
                    "auth required {} socket={} failmode=secure timeout=10 connect_timeout=2",
                    module.display(),
                    match m {
                        Module::PamMfa => &mfad.socket,
                        Module::PamMfaPostgres => &mfad_pg.socket,
                        _ => &floor.socket,
                    }
                    .display()
                ),
                Module::FsyncFloor => continue,
            };
            let service = match m {
                Module::PamMfaPostgres => format!("{name}-pam_mfa-pg"),
                Module::PamMfaFloor => format!("{name}-pam_mfa-floor"),
                _ => format!("{name}-{}", m.file().trim_end_matches(".so")),
            };
            services.push((
                m,
                PamService::install(&service, &format!("# mfa-bench pam calls\n{line}\n"))?,
            ));
        }
        Ok(World {
            services,
            mfad,
            mfad_pg,
            floor,
            pg,
            users,
            dir,
            oath_file,
            oath_text,
            database,
            _scratch: scratch,
        })
    }

    fn service(&self, m: Module) -> Option<&PamService> {
        self.services.iter().find(|(k, _)| *k == m).map(|(_, s)| s)
    }

    /// Every module's replay state back to "nothing used yet" (untimed, between rounds).
    fn reset(&self) -> Result<(), BenchError> {
        let step = totp::step_of(unix_now() as i64, params()) as i64;
        crate::socket::rewind_sqlite(self.database.clone())((step - 10) as u64)?;
        self.pg
            .psql(&format!("UPDATE devices SET counter = {}", step - 10));
        for u in &self.users {
            write_replacing(
                &u.ga_path,
                &u.ga_text,
                Some((u.user.uid, u.user.gid)),
                0o400,
            )?;
        }
        write_replacing(&self.oath_file, &self.oath_text, None, 0o600)?;
        Ok(())
    }

    /// After a round: each module's replay record says every user's code was spent, read
    /// from the module's own state (what a restart would see).
    fn spent_everywhere(&self, step_before: i64) -> Vec<String> {
        let mut problems = Vec::new();
        let spent: Result<i64, rusqlite::Error> = rusqlite::Connection::open(&self.database)
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM devices WHERE counter >= ?1",
                    [step_before],
                    |r| r.get(0),
                )
            });
        match spent {
            Ok(n) if n as usize == self.users.len() => {}
            Ok(n) => problems.push(format!(
                "mfad's store shows {n} of {} users' steps spent after a round",
                self.users.len()
            )),
            Err(e) => problems.push(format!("reading mfad's store: {e}")),
        }
        let on_pg = self.pg.psql(&format!(
            "SELECT count(*) FROM devices WHERE counter >= {step_before}"
        ));
        if on_pg.trim().parse::<usize>().ok() != Some(self.users.len()) {
            problems.push(format!(
                "mfad's PostgreSQL store shows {} of {} users' steps spent after a round",
                on_pg.trim(),
                self.users.len()
            ));
        }
        let unchanged = self
            .users
            .iter()
            .filter(|u| std::fs::read_to_string(&u.ga_path).ok().as_deref() == Some(&u.ga_text))
            .count();
        if unchanged > 0 {
            problems.push(format!(
                "{unchanged} google-authenticator files unchanged after a round (no replay record)"
            ));
        }
        let oath = std::fs::read_to_string(&self.oath_file).unwrap_or_default();
        let unchanged = oath
            .lines()
            .filter(|l| l.ends_with(|c: char| c.is_ascii_hexdigit()))
            .count();
        if unchanged > 0 {
            problems.push(format!(
                "{unchanged} pam_oath users file lines without a spent step after a round"
            ));
        }
        problems
    }
}

/// The fsync floor: 100 bytes to a new file, fsync, rename over the last one.
fn fsync_floor(dir: &Path) -> Result<Duration, BenchError> {
    let tmp = dir.join("floor.tmp");
    let started = Instant::now();
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&[b'x'; 100])?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join("floor"))?;
    Ok(started.elapsed())
}

/// The load probe of `service` in a fresh process: (pam_start, pam_end, stays mapped, page
/// faults).
fn probe(service: &str, module: &str) -> Result<(Duration, Duration, bool, u128), BenchError> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(["--pam-load-probe", service, module])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u128> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    if !out.status.success() || v.len() != 4 {
        return Err(BenchError(format!(
            "the load probe of {service} failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let ns = |x: u128| Duration::from_nanos(u64::try_from(x).unwrap_or(u64::MAX));
    Ok((ns(v[0]), ns(v[1]), v[2] == 1, v[3]))
}

fn versions() -> String {
    crate::ssh::package_versions(&["libpam0g", "libpam-google-authenticator", "libpam-oath"])
}

/// `rounds` measured rounds (after one warm-up round) of every module for each of `users`
/// users, then `load_runs` fresh-process load probes of each module, interleaved.
pub fn bench(
    mfad_bin: &Path,
    bin: &Path,
    n_users: usize,
    rounds: usize,
    load_runs: usize,
) -> Result<PamCallResult, BenchError> {
    let world = World::start(mfad_bin, bin, n_users)?;
    let mut calls: Vec<(Module, Vec<Option<[Duration; 4]>>)> =
        Module::ALL.iter().map(|&m| (m, Vec::new())).collect();
    let mut after: Vec<(Module, Vec<Option<Module>>)> =
        Module::ALL.iter().map(|&m| (m, Vec::new())).collect();
    let mut failures: Vec<(Module, usize)> = Module::ALL.iter().map(|&m| (m, 0)).collect();
    let mut problems = Vec::new();
    let services: Vec<Option<CString>> = Module::ALL
        .iter()
        .map(|&m| {
            world
                .service(m)
                .and_then(|s| CString::new(s.name.clone()).ok())
        })
        .collect();
    // A new order for each user's calls, so that no module always follows the same one:
    // a call pays for what the one before it left (an fsync's idle CPU, mfad's work after
    // its answer, another module's pages in the cache). Seeded: every run has the same orders.
    let mut rng = StdRng::seed_from_u64(ORDER_SEED);
    let mut order: Vec<usize> = (0..Module::ALL.len()).collect();
    for round in 0..=rounds {
        eprintln!("mfa-bench: pam calls, round {round}/{rounds} (0 is the warm-up)");
        world.reset()?;
        let step_before = totp::step_of(unix_now() as i64, params()) as i64 - 1;
        let mut last: Option<Module> = None;
        for u in &world.users {
            if round > 0 {
                for (_, c) in calls.iter_mut() {
                    c.push(None);
                }
                for (_, a) in after.iter_mut() {
                    a.push(None);
                }
            }
            order.shuffle(&mut rng);
            for &i in &order {
                let m = Module::ALL[i];
                if round > 0
                    && let Some(slot) = after[i].1.last_mut()
                {
                    *slot = last;
                }
                last = Some(m);
                if m == Module::FsyncFloor {
                    let took = fsync_floor(&world.dir)?;
                    if round > 0
                        && let Some(slot) = calls[i].1.last_mut()
                    {
                        *slot = Some([took; 4]);
                    }
                    continue;
                }
                let Some(service) = &services[i] else {
                    return Err(BenchError(format!("no PAM service for {}", m.label())));
                };
                let step = totp::step_of(unix_now() as i64, params());
                let code =
                    Zeroizing::new(totp::code_at_step(&u.secret, params(), step).to_string());
                let t = call(service, &u.c_name, &code)?;
                let asked = m == Module::Permit || t.prompts > 0;
                if t.status != ffi::PAM_SUCCESS || !asked {
                    failures[i].1 += 1;
                    if failures[i].1 <= 3 {
                        eprintln!(
                            "mfa-bench: {} refused {} (PAM status {}, {} prompts)",
                            m.label(),
                            u.user.name,
                            t.status,
                            t.prompts
                        );
                    }
                    continue;
                }
                if round > 0
                    && let Some(slot) = calls[i].1.last_mut()
                {
                    let end = t.whole.saturating_sub(t.start + t.authenticate);
                    *slot = Some([t.start, t.authenticate, end, t.whole]);
                }
            }
        }
        problems.extend(world.spent_everywhere(step_before));
    }
    eprintln!("mfa-bench: pam calls, a message between two threads on one CPU and on two");
    let messages = match crate::wake::measure() {
        Ok(m) => Some(m),
        Err(e) => {
            problems.push(e.0);
            None
        }
    };
    let mut load: Vec<(Module, Samples, Samples, bool, Vec<f64>)> = Module::ALL
        .iter()
        // Loading the module does not depend on mfad's store: pam_mfa is probed once.
        .filter(|&&m| {
            !matches!(
                m,
                Module::FsyncFloor | Module::PamMfaPostgres | Module::PamMfaFloor
            )
        })
        .map(|&m| (m, Samples::default(), Samples::default(), false, Vec::new()))
        .collect();
    let mut order: Vec<usize> = (0..load.len()).collect();
    for _ in 0..load_runs {
        order.shuffle(&mut rng);
        for &i in &order {
            let m = load[i].0;
            let Some(service) = world.service(m) else {
                continue;
            };
            let (start, end, stays, faults) = probe(&service.name, m.file())?;
            load[i].1.push(start);
            load[i].2.push(end);
            load[i].3 |= stays;
            load[i].4.push(faults as f64);
        }
    }
    let _ = (&world.mfad, &world.mfad_pg, &world.floor);
    Ok(PamCallResult {
        users: n_users,
        rounds,
        calls,
        after,
        failures,
        load,
        load_runs,
        messages,
        problems,
        versions: versions(),
    })
}
