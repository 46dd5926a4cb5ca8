//! The binary: the allocator, then the command line (`cli`).

use std::process::ExitCode;

/// jemalloc gives freed memory back to the system (its background thread purges pages unused for
/// a second); glibc's allocator keeps the peak of a burst of large bodies for the process's life.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's `malloc_conf`: a pointer to a C string, read once at start-up.
#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points at a static string that is never written.
unsafe impl Sync for MallocConf {}

#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: MallocConf =
    MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

fn main() -> ExitCode {
    image_mirror_webhook::cli::main()
}
