//! Start-up and shutdown: parse flags, load the kernel programs the enabled collectors need,
//! build the collectors, serve until SIGTERM or SIGINT, then detach everything.
use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use tokio::sync::{Semaphore, watch};

use crate::{
    cli::{self, Cli},
    collector::{BuildContext, CollectorSpec},
    ebpf::runtime::{ConfigureContext, EbpfRuntime, Hook, ObjectSettings, layout},
    exporter::ExporterMetrics,
    logging, memory, registry,
    scrape::Scraper,
    server::{self, AppState},
};

pub fn main() -> ExitCode {
    one_malloc_arena();
    raise_open_files_limit();
    no_error_backtraces();
    let registry = cli::Registry {
        collectors: registry::ALL,
        ignored: registry::IGNORED,
    };
    let cli = match cli::parse_from(registry, std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    logging::init(cli.options.log_level, cli.options.log_format);
    // Before any other thread: taking the sockets changes the environment.
    let systemd_fds = if cli.options.systemd_socket {
        match server::systemd::take_listen_fds() {
            Ok(fds) => Some(fds),
            Err(e) => {
                tracing::error!(err = format!("{e:#}"), "exiting");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.options.gomaxprocs.into())
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(err = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli, systemd_fds));
    // Connection tasks cut off at the end of the shutdown grace period are dropped here, not
    // waited for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(err = format!("{e:#}"), "exiting");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, systemd_fds: Option<Vec<std::os::fd::OwnedFd>>) -> anyhow::Result<()> {
    // Before anything else: a SIGTERM during start-up (loading the kernel programs takes a
    // second or two) must end in a clean stop, not in the signal's default action.
    let (stop, stopped) = watch::channel(false);
    let signal = signal_handlers();
    tokio::spawn(async move {
        let signal = signal.await;
        tracing::info!(signal, "shutting down");
        let _ = stop.send(true);
    });
    let options = &cli.options;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        revision = env!("COLLECTOR_GIT_REVISION"),
        "starting collector"
    );
    let specs: Vec<&'static CollectorSpec> = registry::ALL
        .iter()
        .filter(|spec| cli.enabled_collectors.contains(&spec.name))
        .collect();
    tracing::info!(collectors = ?cli.enabled_collectors, "enabled collectors");
    if !cli.ignored_given.is_empty() {
        tracing::warn!(
            ignored = ?cli.ignored_given,
            "node_exporter collectors and options given but not implemented here: accepted, and they do nothing"
        );
    }
    if !cli.ignored_by_default.is_empty() {
        tracing::info!(
            ignored = ?cli.ignored_by_default,
            "node_exporter collectors on by default but not implemented here"
        );
    }

    // The web configuration and the listeners first: a bad file or listen address should fail
    // before anything is attached to the kernel.
    let web = match options.web_config_file.as_str() {
        "" => None,
        path => Some(Arc::new(server::WebConfig::load(std::path::Path::new(
            path,
        ))?)),
    };
    let listeners = match systemd_fds {
        Some(fds) => {
            tracing::info!(
                "Listening on systemd activated listeners instead of port listeners (--web.systemd-socket)"
            );
            server::systemd::listeners(fds)?
        }
        None => {
            let mut addresses = Vec::new();
            for address in &options.listen_addresses {
                addresses.extend(cli::resolve_listen_address(address)?);
            }
            let listeners = server::bind(&addresses).await?;
            listeners.into_iter().map(server::Listener::from).collect()
        }
    };
    match &web {
        Some(web) if web.tls_enabled() => tracing::info!(http2 = web.http2(), "TLS is enabled"),
        _ => tracing::info!(http2 = false, "TLS is disabled"),
    }
    let kube_auth = server::KubeAuth::from_options(&options.kube_auth, web.as_deref()).await?;

    let collector_flags = Arc::new(cli.collector_flags);
    let ebpf = start_ebpf(&specs, options, &collector_flags).await?;

    let context = BuildContext {
        procfs: options.procfs.clone(),
        sysfs: options.sysfs.clone(),
        rootfs: options.rootfs.clone(),
        udev_data: options.udev_data.clone(),
        flags: collector_flags,
        enabled: specs.clone(),
        ebpf: ebpf.clone(),
    };
    let mut collectors = Vec::new();
    for spec in &specs {
        match (spec.build)(&context) {
            Ok(collector) => collectors.push((spec.name, collector)),
            Err(e) => tracing::error!(
                collector = spec.name,
                err = format!("{e:#}"),
                "collector disabled: cannot start"
            ),
        }
    }
    drop(context);
    release_startup_memory();

    let state = Arc::new(AppState {
        scraper: Scraper::new(collectors, options.scrape_timeout),
        exporter: ExporterMetrics::default(),
        exporter_metrics_enabled: !options.disable_exporter_metrics,
        telemetry_path: options.telemetry_path.clone(),
        scrape_permits: (options.max_requests > 0).then(|| Semaphore::new(options.max_requests)),
        max_requests: options.max_requests,
    });

    let limits = server::ConnectionLimits {
        max_connections: options.max_connections as usize,
        header_read_timeout: server::ConnectionLimits::HEADER_READ_TIMEOUT,
        tls_handshake_timeout: server::ConnectionLimits::TLS_HANDSHAKE_TIMEOUT,
    };
    server::serve(
        listeners,
        server::router(Arc::clone(&state), web.clone(), kube_auth),
        stopped,
        limits,
        web,
    )
    .await?;

    // Dropping the last handles closes the program and link fds: the kernel detaches them.
    drop(state);
    if let Some(ebpf) = ebpf {
        match Arc::try_unwrap(ebpf) {
            Ok(runtime) => drop(runtime),
            Err(_) => {
                tracing::warn!("eBPF runtime still referenced at exit; the kernel detaches on exit")
            }
        }
        tracing::info!("eBPF programs detached");
    }
    Ok(())
}

/// Loads and attaches the kernel programs the enabled collectors need, configured by their hooks
/// and by the collectors themselves. `None` when none is needed or eBPF is unavailable (logged);
/// an error only for a bad flag value.
async fn start_ebpf(
    specs: &[&'static CollectorSpec],
    options: &cli::Options,
    flags: &Arc<crate::flags::CollectorFlags>,
) -> anyhow::Result<Option<Arc<EbpfRuntime>>> {
    // Collectors may share a hook (ebpf.cgroup charges from the scheduler and block hooks).
    let kernel_parts: Vec<_> = specs.iter().filter_map(|spec| spec.kernel).collect();
    let mut hooks: Vec<&'static Hook> = Vec::new();
    for hook in kernel_parts.iter().flat_map(|part| part.hooks) {
        if !hooks.contains(hook) {
            hooks.push(hook);
        }
    }
    if hooks.is_empty() {
        return Ok(None);
    }
    let sysfs = options.sysfs.clone();
    let ebpf_options = options.ebpf.clone();
    let flags = Arc::clone(flags);
    let started = tokio::task::spawn_blocking(move || {
        let discovery = layout::discover(
            std::path::Path::new(layout::VMLINUX_BTF),
            layout::tracefs_root().as_deref(),
        );
        let context = ConfigureContext {
            sysfs: &sysfs,
            flags: &flags,
            options: &ebpf_options,
            possible_cpus: aya::util::nr_cpus()
                .map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))?
                as u32,
            kernel: &discovery,
        };
        let mut settings = ObjectSettings::default();
        let configures = hooks
            .iter()
            .filter_map(|hook| hook.configure)
            .chain(kernel_parts.iter().filter_map(|part| part.configure));
        for configure in configures {
            configure(&context, &mut settings)?;
        }
        Ok::<_, anyhow::Error>(EbpfRuntime::start(
            &hooks,
            discovery,
            &settings,
            &ebpf_options,
        ))
    })
    .await
    .context("eBPF loader task failed")??;
    match started {
        Ok(runtime) => Ok(Some(Arc::new(runtime))),
        Err(e) => {
            tracing::warn!(
                err = format!("{e:#}"),
                "eBPF unavailable: serving every non-eBPF metric"
            );
            Ok(None)
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves to the first that comes.
fn signal_handlers() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

/// glibc gives each thread that allocates its own arena (up to 8 per CPU) and keeps what they
/// free for reuse: with the collector threads, the statfs workers and the runtime that held
/// ~10 MiB of freed scrape buffers resident. The threads rarely allocate at the same time, so
/// one shared arena costs no measurable CPU. (musl has no per-thread arenas.)
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The soft limit on open files is often 1024 (systemd's default, some container runtimes),
/// which a few hundred connections and the files collectors keep open can exhaust; raise it to
/// the hard limit, as Go's runtime does for node_exporter. `--web.max-connections` bounds what
/// clients can take of it.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write a valid, initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Collectors report failures (and "no data") as anyhow errors, which capture a backtrace when
/// RUST_BACKTRACE is set; they are logged as text only, so unwinding the stack on every failed
/// update is waste. Panics still print their backtrace under RUST_BACKTRACE.
fn no_error_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called before any other thread is started.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}

/// Start-up leaves behind what steady state never uses again: heap from parsing the kernel's
/// BTF (megabytes, twice), and the pages of the binary that ran once (flag parsing, BTF and
/// object loading: most of the ~6 MiB of code touched by then). Give both back, so the resident
/// size reflects steady state; the code a scrape needs is read back in (from the page cache, or
/// from disk if it was dropped there too) on the first scrapes.
fn release_startup_memory() {
    memory::trim_heap();
    if let Err(e) = page_out_own_image() {
        tracing::debug!(err = %e, "cannot page out start-up code");
    }
}

/// `MADV_PAGEOUT` (5.4+) on the read-only mappings of our own executable: clean, file-backed
/// pages, dropped without I/O. The kernel does it only for a file the caller owns or could open
/// for writing (root in the DaemonSet; not a systemd `DynamicUser`, where it does nothing).
fn page_out_own_image() -> anyhow::Result<()> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [range, perms, _, _, _, path] = fields[..] else {
            continue;
        };
        if std::path::Path::new(path) != exe || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (start, end) = (
            usize::from_str_radix(start, 16)?,
            usize::from_str_radix(end, 16)?,
        );
        // SAFETY: a whole, page-aligned, read-only mapping of our own file; MADV_PAGEOUT only
        // drops clean pages, whose contents the kernel reads back on the next access.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        if rc != 0 {
            anyhow::bail!("madvise: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}
